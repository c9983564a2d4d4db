#!/usr/bin/env python3
"""Helpers for bench/http_proxy.sh.

  http_report.py wrk               wrk --latency output on stdin -> one `key=value` line
  http_report.py h2load LOG        h2load output on stdin, its --log-file LOG -> one line
  http_report.py table RAW STATUS ...   raw results -> markdown tables

Every line has rps, p50_us, p99_us, non2xx (responses with a status >= 400 for wrk, >= 300
for h2load) and errors (socket errors: connect, read, write and timeout for wrk; stream
errors and timeouts for h2load).
RAW has one line per run: `round<TAB>cell<TAB>peer<TAB>key=value ...`.
STATUS has one line per peer: `peer<TAB>ok|skipped|failed<TAB>message<TAB>ready seconds`.
CELLS_FAILED has one line per cell not run for a ready peer: `peer<TAB>cell<TAB>why`.
"""

import argparse
import re
import sys
from collections import defaultdict

from report import Runs, number, read_tsv, table, write_report

UNIT_US = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
CELL = re.compile(r"^(h[12])-(small|64k)-(\d+)$")


def duration_us(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(match[1]) * UNIT_US[match[2]] if match else None


def wrk_line(text):
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not rps:
        # wrk gives up before its first request when the address refuses connections.
        reason = "wrk-could-not-connect" if "unable to connect" in text else "no-wrk-summary"
        return f"errors=1 reason={reason}"
    fields = {"rps": rps[1], "requests": "0", "non2xx": "0", "errors": "0"}
    if requests := re.search(r"^\s*(\d+) requests in", text, re.M):
        fields["requests"] = requests[1]
    for pct in ("50", "99"):
        got = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        us = duration_us(got[1]) if got else None
        # wrk prints 0.00us when no request completed: that is no latency, not a fast one.
        fields[f"p{pct}_us"] = f"{us:.0f}" if us and int(fields["requests"]) else "nan"
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        fields["non2xx"] = non2xx[1]
    if sockets := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        kinds = dict(zip(("connect", "read", "write", "timeout"), sockets.groups()))
        fields.update(kinds)
        fields["errors"] = str(sum(int(v) for v in kinds.values()))
    return " ".join(f"{k}={v}" for k, v in fields.items())


def h2load_line(text, log_path, clients):
    rps = re.search(r"^finished in [\d.]+s, ([\d.]+) req/s", text, re.M)
    requests = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
        re.M,
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not (rps and requests and codes):
        return "errors=1 reason=no-h2load-summary"
    done, errored, timeouts = (int(requests[i]) for i in (3, 6, 7))
    fields = {
        "rps": rps[1],
        "requests": str(done),
        "non2xx": str(sum(int(codes[i]) for i in (2, 3, 4))),
        "errored": str(errored),
        "timeout": str(timeouts),
        "errors": str(errored + timeouts),
    }
    # h2load counts no error for a client that never connected, never got HTTP/2 or never got
    # an answer: count each client once, and say why.
    if not re.search(r"^Application protocol: h2$", text, re.M):
        fields["errors"] = str(errored + timeouts + clients)
        fields["reason"] = "no-h2-connection"
    elif done == 0:
        fields["errors"] = str(errored + timeouts + clients)
        fields["reason"] = "no-response"
    latencies = []
    try:
        with open(log_path) as log:
            for line in log:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[2].strip().isdigit():
                    latencies.append(int(parts[2]))
    except OSError:
        pass
    latencies.sort()
    for pct in (50, 99):
        value = nearest_rank(latencies, pct)
        fields[f"p{pct}_us"] = str(value) if value is not None else "nan"
    return " ".join(f"{k}={v}" for k, v in fields.items())


def nearest_rank(ordered, pct):
    """The smallest sample with at least pct percent of the samples at or below it."""
    if not ordered:
        return None
    rank = -(-pct * len(ordered) // 100)  # ceiling without floats
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def parse_fields(text):
    fields = dict(item.partition("=")[::2] for item in text.split())
    cpu, wall = number(fields, "proxy_cpu_s"), number(fields, "wall_s")
    if cpu is not None and wall:
        fields["cpu_pct"] = str(100 * cpu / wall)
    return fields


def cell_title(cell, small_body):
    if cell == "routers":
        return f"HTTP/1.1, {small_body} B body, 64 connections"
    proto, body, conns = CELL.match(cell).groups()
    size = f"{small_body} B" if body == "small" else "64 KiB"
    how = "HTTP/1.1 keep-alive (wrk)" if proto == "h1" else "HTTP/2 over TLS (h2load)"
    return f"{how}, {size} body, {conns} connections"


def ms(us):
    return "—" if us is None else f"{us / 1000:.2f}"


def render(args):
    runs = Runs(args.raw, parse_fields)  # (cell, peer) -> [(round, fields)]
    status = {row[0]: tuple(row[1:]) for row in read_tsv(args.status, 4)}
    cells_failed = {(row[1], row[0]): row[2] for row in read_tsv(args.cells_failed, 3)}
    peers = args.peers.split()
    cells = args.cells.split()
    values, median, total = runs.values, runs.median, runs.total

    def missing(peer):
        state = status.get(peer, ("missing",))[0]
        return state if state != "ok" else "—"

    def errors_cell(cell, peer):
        detail = defaultdict(int)
        reasons = set()
        for _, f in runs[(cell, peer)]:
            for kind in ("connect", "read", "write", "timeout", "errored"):
                detail[kind] += int(number(f, kind) or 0)
            if f.get("reason"):
                reasons.add(f["reason"])
            if f.get("exited"):
                reasons.add("proxy-exited")
        text = str(total(cell, peer, "errors"))
        kinds = [f"{k} {v}" for k, v in detail.items() if v] + sorted(reasons)
        return text + (f" ({', '.join(kinds)})" if kinds else "")

    def row(cell, peer, label, baselines):
        if (cell, peer) not in runs:
            state = "failed" if (cell, peer) in cells_failed else missing(peer)
            return [label, state] + ["—"] * (len(baselines) + 6)
        rps = median(cell, peer, "rps")
        ratios = []
        for base in baselines:
            ref = median(cell, base, "rps") if base else None
            ratios.append(f"{rps / ref:.2f}×" if rps is not None and ref else "—")
        rss = [v for v in values(cell, peer, "peak_rss_kb") if v]
        cpu = median(cell, peer, "cpu_pct")
        return [
            label,
            f"{rps:.0f}" if rps is not None else "—",
            *ratios,
            ms(median(cell, peer, "p50_us")),
            ms(median(cell, peer, "p99_us")),
            str(total(cell, peer, "non2xx")),
            errors_cell(cell, peer),
            f"{max(rss) / 1024:.1f}" if rss else "—",
            f"{cpu:.0f}%" if cpu is not None else "—",
        ]

    tail = ["p50 (ms)", "p99 (ms)", "non-2xx", "socket errors", "peak RSS (MiB)", "proxy CPU"]
    out = [open(args.header).read().rstrip(), ""]
    out += [
        "req/s and latency: median over rounds; non-2xx and errors: sum over rounds; peak RSS: "
        "the largest per-run peak (VmHWM reset before each run, so it includes what the process "
        "kept from earlier runs; nginx master + worker); proxy CPU: median, 100% = "
        "one core. A proxy near 100% CPU was the bottleneck; direct is the ceiling of the "
        "load core (wrk and the backend share it).",
        "",
    ]
    for cell in [c for c in cells if c != "routers"]:
        shown = [p for p in peers if not (p == "direct" and cell.startswith("h2-"))]
        if any(p.endswith("-mw") for p in shown):
            # Middleware variants are compared like for like (sallyport-mw with nginx-mw) and
            # with the same proxy without middlewares: 1 - that ratio is the chain's cost.
            def bases(p):
                if p.endswith("-mw"):
                    return ["nginx-mw", "traefik-mw", p[: -len("-mw")]]
                return ["nginx", "traefik", None]

            rows = [row(cell, p, p, bases(p)) for p in shown]
            head = ["peer", "req/s", "× nginx", "× Traefik", "× no middlewares", *tail]
        else:
            rows = [row(cell, p, p, ["nginx", "traefik"]) for p in shown]
            head = ["peer", "req/s", "× nginx", "× Traefik", *tail]
        out += [f"## {cell_title(cell, args.small_body)}", ""]
        if len(head) > 4 + len(tail):
            out += ["PROXY-mw: the same proxy with the five-middleware chain; its × nginx and "
                    "× Traefik compare with nginx-mw and traefik-mw.", ""]
        out += [table(rows, head), ""]

    if "routers" in cells:
        scale = sorted(
            {p for (c, p) in runs if c == "routers"} | {p for p in status if "@" in p},
            key=lambda p: (p.split("@")[0], int(p.split("@")[1])),
        )
        rows = []
        for peer in scale:
            proxy, count = peer.split("@")
            fewest = min((q for q in scale if q.startswith(proxy + "@")), key=lambda q: int(q.split("@")[1]))
            r = row("routers", peer, proxy, [fewest])
            ready = status.get(peer, ("", "", ""))[2]
            rows.append([r[0], f"{int(count):,}", *r[1:], ready or "—"])
        out += [
            f"## Routers: req/s against the number of routers ({cell_title('routers', args.small_body)})",
            "",
            "Every router has a `` Host(`hNNNNNN.example`) `` rule; requests name the last one. "
            "× fewest: relative to the same proxy with the fewest routers. "
            "Ready: seconds from start to the first correct answer.",
            "",
            table(rows, ["proxy", "routers", "req/s", "× fewest", *tail, "ready (s)"]),
            "",
        ]

    spread = []
    for cell in cells:
        for peer in sorted({p for (c, p) in runs if c == cell}, key=lambda p: (p not in peers, peers.index(p) if p in peers else p)):
            got = values(cell, peer, "rps")
            p99 = values(cell, peer, "p99_us")
            spread.append([cell, peer, " / ".join("—" if v is None else f"{v:.0f}" for v in got),
                           " / ".join(ms(v) for v in p99)])
    out += ["## Every round (round 1 / 2 / …)", "", table(spread, ["cell", "peer", "req/s", "p99 (ms)"]), ""]

    notes = [f"- {p}: {s[0]}: {s[1]}" for p, s in status.items() if s[0] != "ok"]
    notes += [f"- {p}, cell {c}: not run: {why}" for (c, p), why in cells_failed.items()]
    if notes:
        out += ["## Not measured", "", *notes, ""]
    write_report(args.out, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("wrk")
    h2 = sub.add_parser("h2load")
    h2.add_argument("log")
    h2.add_argument("--clients", type=int, required=True)
    tab = sub.add_parser("table")
    tab.add_argument("raw")
    tab.add_argument("status")
    tab.add_argument("--header", required=True)
    tab.add_argument("--peers", required=True)
    tab.add_argument("--cells", required=True)
    tab.add_argument("--cells-failed", required=True)
    tab.add_argument("--small-body", required=True)
    tab.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "wrk":
        print(wrk_line(sys.stdin.read()))
    elif args.command == "h2load":
        print(h2load_line(sys.stdin.read(), args.log, args.clients))
    else:
        render(args)


if __name__ == "__main__":
    main()
