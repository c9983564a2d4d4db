#!/usr/bin/env python3
"""Tables for bench/observability.sh.

  observability_report.py RAW STATUS --header H --configs C --connections N
      --api-samples S --api-runs R --api-memory M --out OUT

RAW has one line per load run, and one per shared run (`round<TAB>shared<TAB>configuration<TAB>
...`: the configuration's wrk figures, cpu_ns and writer_ns, then its baseline's, prefixed
`base_`, with base_cpu_ns). RAW's load lines: `round<TAB>load<TAB>configuration<TAB>key=value ...`: wrk's
figures (http_report.py wrk), wall_s and proxy_cpu_s, and what the observability produced:
log_lines (access log lines for the web entrypoint), log_all and log_bytes (the whole file),
served (the requests the metrics counted), scrapes, scrape_failed, scrape_ms, scrape_bytes.
STATUS: `peer<TAB>ok|skipped|failed<TAB>message<TAB>ready seconds<TAB>RSS at ready (KiB)`.
S has one line per API request: `round<TAB>request<TAB>peer<TAB>code<TAB>bytes<TAB>seconds`;
R one line per API run: `round<TAB>request<TAB>peer<TAB>requests=… wall_s=… proxy_cpu_s=…`;
M one line per API peer at the end: `peer<TAB>VmRSS=… VmHWM=…` (KiB).
"""

import argparse
import statistics
from collections import defaultdict

from http_report import ms, nearest_rank
from report import Runs, not_measured, number, read_tsv, table, write_report

LABELS = {
    "off": "off",
    "accesslog": "access log (json, file)",
    "metrics": "metrics (Prometheus, scraped 1/s)",
    "both": "access log + metrics",
    "clf": "access log (common, file)",
    "both-clf": "access log (common) + metrics",
    "traefik-off": "Traefik: off",
    "traefik-both": "Traefik: access log (json) + metrics",
    "off-twin": "off (a second instance: the method's error)",
    "nginx-off": "nginx: off",
    "nginx-log": "nginx: access log (combined, 64 KiB buffer)",
}


def baseline(cfg):
    """The configuration a configuration's cost is measured against: its own proxy's "off"."""
    if cfg.startswith("traefik-"):
        return "traefik-off"
    if cfg.startswith("nginx-"):
        return "nginx-off"
    return "off"
API_PEERS = ("sallyport", "traefik")


def parse_fields(text):
    fields = dict(item.partition("=")[::2] for item in text.split())
    cpu, wall, requests = (number(fields, k) for k in ("proxy_cpu_s", "wall_s", "requests"))
    if cpu is not None and wall:
        fields["cpu_pct"] = str(100 * cpu / wall)
    if cpu is not None and requests:
        fields["cpu_us_per_req"] = str(1e6 * cpu / requests)
    return fields


def ratio(mine, ref):
    return f"{mine / ref:.3f}×" if mine is not None and ref else "—"


def load_tables(runs, configs, connections):
    median, total, values = runs.median, runs.total, runs.values
    measured = [c for c in configs if ("load", c) in runs]
    if not measured:
        return []

    def errors_cell(cfg):
        kinds = {k: total("load", cfg, k) for k in ("connect", "read", "write", "timeout")}
        reasons = sorted({f["reason"] for _, f in runs[("load", cfg)] if f.get("reason")})
        reasons += ["proxy-exited"] if any(f.get("exited") for _, f in runs[("load", cfg)]) else []
        detail = [f"{k} {v}" for k, v in kinds.items() if v] + reasons
        return str(total("load", cfg, "errors")) + (f" ({', '.join(detail)})" if detail else "")

    rows = []
    for cfg in measured:
        rps, cpu = median("load", cfg, "rps"), median("load", cfg, "cpu_us_per_req")
        rps_off = median("load", baseline(cfg), "rps")
        cpu_off = median("load", baseline(cfg), "cpu_us_per_req")
        busy = median("load", cfg, "cpu_pct")
        cost = f"{100 * (1 - rps / rps_off):.1f}%" if rps is not None and rps_off else "—"
        rows.append([
            LABELS.get(cfg, cfg),
            f"{rps:.0f}" if rps is not None else "—",
            ratio(rps, rps_off),
            cost,
            ms(median("load", cfg, "p50_us")),
            ms(median("load", cfg, "p99_us")),
            str(total("load", cfg, "non2xx")),
            errors_cell(cfg),
            f"{busy:.0f}%" if busy is not None else "—",
            f"{cpu:.1f}" if cpu is not None else "—",
            ratio(cpu, cpu_off),
        ])
    out = [
        f"## HTTP/1.1 keep-alive through the proxy, {connections} connections",
        "",
        "req/s, latency and CPU: median over rounds; non-2xx and socket errors: sums. × off: "
        "relative to the same proxy's configuration without observability; cost: the throughput "
        "lost (the target: access log + metrics under 5%). Proxy CPU near 100% means the proxy was the "
        "bottleneck, so req/s measures its cost per request; CPU µs/request says the same from the "
        "proxy's side (CPU time over the requests wrk completed).",
        "",
        table(rows, ["configuration", "req/s", "× off", "cost", "p50 (ms)", "p99 (ms)", "non-2xx",
                     "socket errors", "proxy CPU", "CPU µs/request", "× off"]),
        "",
    ]

    logged = [c for c in measured if any("log_lines" in f for _, f in runs[("load", c)])]
    counted = [c for c in measured if any("served" in f for _, f in runs[("load", c)])]
    rows = []
    for cfg in sorted(set(logged) | set(counted), key=measured.index):
        per_run = [f for _, f in sorted(runs[("load", cfg)])]
        requests = sum(int(number(f, "requests") or 0) for f in per_run)
        lines = sum(int(number(f, "log_lines") or 0) for f in per_run)
        served = sum(int(number(f, "served") or 0) for f in per_run)
        # wrk counts the responses it read; requests still in flight when it stops were served
        # (and logged) but not counted, so a run may log up to one line per connection more.
        # A line missing is a request wrk completed and the log does not have: dropped.
        missing = sum(max(0, int(number(f, "requests") or 0) - int(number(f, "log_lines") or 0))
                      for f in per_run) if cfg in logged else None
        log_bytes = sum(int(number(f, "log_bytes") or 0) for f in per_run)
        log_all = sum(int(number(f, "log_all") or 0) for f in per_run)
        rows.append([
            LABELS.get(cfg, cfg),
            f"{requests:,}",
            f"{lines:,}" if cfg in logged else "—",
            f"{lines - requests:+,}" if cfg in logged else "—",
            f"{missing:,}" if missing is not None else "—",
            f"{served:,}" if cfg in counted else "—",
            f"{lines - served:+,}" if cfg in logged and cfg in counted else "—",
            f"{log_bytes / log_all:.0f}" if log_all else "—",
        ])
    if rows:
        out += [
            "## Access log lines and metrics counts against requests (sums over rounds)",
            "",
            "Requests: completed by wrk. Log lines: the file's lines for the web entrypoint, once "
            "the writer caught up. Lines − requests is at most the requests in flight when wrk "
            f"stopped ({connections} a run at most); a negative run shows up as dropped lines. "
            "Metrics count: the growth of `*_entrypoint_requests_total{entrypoint=\"web\"}` "
            "over the run; lines − metrics should be 0.",
            "",
            table(rows, ["configuration", "requests", "log lines", "lines − requests", "dropped lines",
                         "metrics count", "lines − metrics", "bytes/line"]),
            "",
        ]

    scraped = [c for c in measured if any("scrapes" in f for _, f in runs[("load", c)])]
    if scraped:
        rows = [[
            LABELS.get(c, c),
            str(total("load", c, "scrapes")),
            str(total("load", c, "scrape_failed")),
            f"{median('load', c, 'scrape_ms'):.2f}" if median("load", c, "scrape_ms") is not None else "—",
            f"{median('load', c, 'scrape_bytes'):.0f}" if median("load", c, "scrape_bytes") is not None else "—",
        ] for c in scraped]
        out += [
            "## Scrapes of /metrics during the load runs",
            "",
            "One `curl` GET a second on the `traefik` entrypoint, as Prometheus scrapes; failed: "
            "not a 200 with a body. Time: median of the runs' median scrape.",
            "",
            table(rows, ["configuration", "scrapes", "failed", "scrape time (ms)", "body bytes"]),
            "",
        ]

    spread = []
    for cfg in measured:
        spread.append([
            LABELS.get(cfg, cfg),
            " / ".join("—" if v is None else f"{v:.0f}" for v in values("load", cfg, "rps")),
            " / ".join(ms(v) for v in values("load", cfg, "p99_us")),
            " / ".join("—" if v is None else f"{v:.1f}" for v in values("load", cfg, "cpu_us_per_req")),
        ])
    out += ["## Load: every round (round 1 / 2 / …)", "",
            table(spread, ["configuration", "req/s", "p99 (ms)", "CPU µs/request"]), ""]
    return out


def shared_tables(runs, configs):
    """The shared part: each configuration beside its baseline on one core, round by round."""
    measured = [c for c in configs + ["off-twin"] if ("shared", c) in runs]
    if not measured:
        return []
    rows, spread = [], []
    for cfg in measured:
        rps_cost, cpu_cost, shares, writer = [], [], [], []
        for _, f in sorted(runs[("shared", cfg)]):
            got = [number(f, k) for k in ("requests", "base_requests", "cpu_ns", "base_cpu_ns")]
            if None in got or not all(got):
                continue
            mine, theirs, cpu, base_cpu = got
            rps_cost.append(100 * (1 - mine / theirs))
            cpu_cost.append(100 * ((cpu / mine) / (base_cpu / theirs) - 1))
            shares.append(100 * cpu / (cpu + base_cpu))
            writer.append(100 * ((number(f, "writer_ns") or 0) / mine) / (base_cpu / theirs))
        if not cpu_cost:
            continue
        def spread_of(values):
            return f"{statistics.median(values):+.1f}% ({min(values):+.1f} … {max(values):+.1f})"
        errors = runs.total("shared", cfg, "errors") + runs.total("shared", cfg, "base_errors")
        rows.append([
            LABELS.get(cfg, cfg),
            str(len(cpu_cost)),
            spread_of(cpu_cost),
            spread_of(rps_cost),
            f"{statistics.median(shares):.1f}%",
            f"{statistics.median(writer):.1f}%" if any(writer) else "—",
            str(errors),
        ])
        spread.append([LABELS.get(cfg, cfg), " / ".join(f"{v:+.1f}" for v in cpu_cost)])
    return [
        "## Beside \"off\" on one core (the shared part)",
        "",
        "Each configuration ran at the same time as its proxy's configuration without "
        "observability, both on the proxy CPU, each loaded by its own wrk. The scheduler gives "
        "both equal shares of the core and the host's noise hits both alike, so the cost per "
        "request compares round by round. CPU cost: CPU time per request against the baseline's "
        "in the same round (equal CPU, so this is the throughput given up); median and range over "
        "rounds. Throughput cost: requests against the baseline's in the same round (moves with "
        "the share of the core each got). Writer: the access log's writer thread, as a part of "
        "the baseline's CPU per request.",
        "",
        table(rows, ["configuration", "rounds", "CPU cost per request", "throughput cost",
                     "share of the core", "writer thread", "socket errors"]),
        "",
        "CPU cost in every round (round 1 / 2 / …):",
        "",
        table(spread, ["configuration", "CPU cost per request"]),
        "",
    ]


def cpu_per_request(cpu_s, count):
    """Milliseconds of proxy CPU a request, or a bound when the runs took under 5 clock ticks
    (50 ms), too few to divide."""
    if not count:
        return "—"
    if cpu_s < 0.05:
        return f"< {50 / count:.2f}"
    return f"{1e3 * cpu_s / count:.2f}"


def api_tables(samples_path, runs_path, memory_path, status):
    samples = defaultdict(list)  # (request, peer) -> [(round, code, bytes, seconds)]
    order = []
    for round_, request, peer, code, size, seconds in read_tsv(samples_path, 6):
        if not request:
            continue
        if request not in order:
            order.append(request)
        try:
            samples[(request, peer)].append((int(round_), code, int(size), float(seconds)))
        except ValueError:
            samples[(request, peer)].append((int(round_), "000", 0, float("nan")))
    if not samples:
        return []
    runs = Runs(runs_path, lambda text: dict(item.partition("=")[::2] for item in text.split()))
    peers = [p for p in API_PEERS if any(k[1] == p for k in samples)]

    def times_us(request, peer, round_=None):
        got = sorted(1e6 * s for r, code, _, s in samples[(request, peer)]
                     if code == "200" and (round_ is None or r == round_))
        return got

    rows, spread = [], []
    for request in order:
        medians = {}
        for peer in peers:
            got = times_us(request, peer)
            medians[peer] = statistics.median(got) if got else None
        for peer in peers:
            got = times_us(request, peer)
            all_ = samples[(request, peer)]
            bad = sum(1 for _, code, _, _ in all_ if code != "200")
            sizes = [b for _, code, b, _ in all_ if code == "200"]
            cpu = sum(v or 0 for v in runs.values(request, peer, "proxy_cpu_s"))
            count = sum(v or 0 for v in runs.values(request, peer, "requests"))
            other = [q for q in peers if q != peer]
            rows.append([
                request,
                peer,
                ms(medians[peer]),
                ms(nearest_rank(got, 99)),
                ratio(medians[peer], medians[other[0]]) if peer == "sallyport" and other else "",
                str(len(all_)),
                str(bad),
                f"{statistics.median(sizes):,.0f}" if sizes else "—",
                cpu_per_request(cpu, count),
            ])
            rounds = sorted({r for r, *_ in all_})
            per_round = []
            for r in rounds:
                got_r = times_us(request, peer, r)
                per_round.append(ms(statistics.median(got_r)) if got_r else "—")
            spread.append([request, peer, " / ".join(per_round)])

    memory = {row[0]: dict(item.partition("=")[::2] for item in row[1].split())
              for row in read_tsv(memory_path, 2) if row[0]}
    mem_rows = []
    for peer in peers:
        state = status.get(f"api-{peer}", ("missing", "", "", ""))

        def mib(kb):
            try:
                return f"{int(kb) / 1024:.1f}"
            except (TypeError, ValueError):
                return "—"

        got = memory.get(peer, {})
        mem_rows.append([peer, state[2] or "—", mib(state[3]), mib(got.get("VmRSS")), mib(got.get("VmHWM"))])

    return [
        "## API with generated routers: response times",
        "",
        "Each request repeated over one keep-alive connection (one curl per round), timed by "
        "curl's `%{time_total}`; median and p99 (nearest rank) over every round's 200 answers. "
        "× Traefik: sallyport's median over Traefik's (below 1 is faster). Proxy CPU: its CPU "
        "time over the runs divided by the requests (counted in 10 ms clock ticks; under 5 ticks "
        "only a bound is given).",
        "",
        table(rows, ["request", "peer", "median (ms)", "p99 (ms)", "× Traefik", "requests",
                     "non-200", "body bytes", "proxy CPU ms/request"]),
        "",
        "## API: memory",
        "",
        "Ready: seconds from start until `/api/overview` counted every router. RSS at ready and "
        "after every API request; peak: VmHWM over the process's life.",
        "",
        table(mem_rows, ["peer", "ready (s)", "RSS at ready (MiB)", "RSS after (MiB)", "peak RSS (MiB)"]),
        "",
        "## API: every round's median (ms, round 1 / 2 / …)",
        "",
        table(spread, ["request", "peer", "median (ms)"]),
        "",
    ]


def instruction_tables(path):
    """Instructions (and, under cache simulation, L1 misses) per request under callgrind, each
    configuration against "off"."""
    per_request = {}
    for cfg, requests, instructions, *misses in read_tsv(path, 6):
        if cfg and int(requests or 0) > 0 and int(instructions or 0) > 0:
            n = int(requests)
            per_request[cfg] = (n, [int(instructions) / n] + [int(m) / n for m in misses if m])
    if not per_request:
        return []
    off = per_request.get("off", (0, None))[1]
    simulated = all(len(counts) == 4 for _, counts in per_request.values())
    rows = []
    for cfg, (requests, counts) in per_request.items():
        row = [LABELS.get(cfg, cfg), f"{requests:,}"]
        for i, count in enumerate(counts if simulated else counts[:1]):
            row.append(f"{count:,.0f}")
            if i == 0:
                row.append(f"{count - off[0]:+,.0f}" if off else "—")
            row.append(f"{100 * (count / off[i] - 1):+.1f}%" if off and off[i] else "—")
        rows.append(row)
    header = ["configuration", "requests", "instructions/request", "− off", "× off − 1"]
    if simulated:
        for name in ["L1i misses", "L1d read misses", "L1d write misses"]:
            header += [f"{name}/request", "× off − 1"]
    return [
        "## Instructions per request (callgrind)",
        "",
        "User-space instructions the sallyport process executed per request (all its threads, the "
        "access log's writer included), counted by valgrind's callgrind over one wrk run of 8 "
        "connections after a warm-up. Independent of the machine's load; it leaves out the "
        "kernel's work (sockets, the log file's writes)."
        + (" With BENCH_CACHE_SIM=1: the misses of callgrind's simulated L1 caches (32 KiB "
           "instructions, 32 KiB data; all threads share them, as on one core)." if simulated else ""),
        "",
        table(rows, header),
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("status")
    for name in ("--header", "--configs", "--connections", "--api-samples", "--api-runs",
                 "--api-memory", "--instructions", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    runs = Runs(args.raw, parse_fields)
    status = {row[0]: tuple(row[1:]) for row in read_tsv(args.status, 5) if row[0]}
    out = [open(args.header).read().rstrip(), ""]
    out += load_tables(runs, args.configs.split(), int(args.connections))
    out += shared_tables(runs, args.configs.split())
    out += instruction_tables(args.instructions)
    out += api_tables(args.api_samples, args.api_runs, args.api_memory, status)
    out += not_measured(status)
    write_report(args.out, out)


if __name__ == "__main__":
    main()
