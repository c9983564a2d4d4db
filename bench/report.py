#!/usr/bin/env python3
"""Helpers for bench/tcp_passthrough.sh.

  report.py iperf                 iperf3 -J output on stdin -> one `key=value` line
  report.py table RAW STATUS ...  raw results -> markdown tables (medians, ratios, errors)

RAW has one line per run: `round<TAB>test<TAB>peer<TAB>key=value ...`.
STATUS has one line per peer: `peer<TAB>ok|skipped|failed<TAB>message`.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

PROXIES_NOT_OURS = ("traefik", "haproxy", "nginx")


def iperf_line(text):
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        return "errors=1 reason=no-json-output"
    if result.get("error"):
        reason = result["error"].replace(" ", "_")
        return f"errors=1 reason={reason}"
    end = result.get("end", {})
    received = end.get("sum_received", {}).get("bits_per_second")
    if received is None:
        return "errors=1 reason=no-summary"
    retransmits = end.get("sum_sent", {}).get("retransmits", 0)
    return f"gbps={received / 1e9:.3f} errors=0 retransmits={retransmits}"


def parse_fields(text):
    fields = {}
    for item in text.split():
        key, _, value = item.partition("=")
        fields[key] = value
    # Derived: how busy the proxy was (100 = one core), and its CPU cost per connection.
    cpu, wall, ok = (number(fields, k) for k in ("proxy_cpu_s", "wall_s", "ok"))
    if cpu is not None and wall:
        fields["cpu_pct"] = str(100 * cpu / wall)
    if cpu is not None and ok:
        fields["cpu_us_per_conn"] = str(1e6 * cpu / ok)
    return fields


def number(fields, key):
    try:
        value = float(fields.get(key, "nan"))
    except ValueError:
        return None
    return None if value != value else value  # NaN -> None


def fmt(value, key):
    if value is None:
        return "—"
    if key == "gbps":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}"


class Runs(defaultdict):
    """The runs of a benchmark by (cell, peer): `[(round, fields)]`, read from its RAW file
    (`round<TAB>cell<TAB>peer<TAB>key=value ...`), each line's fields given by `parse`."""

    def __init__(self, path, parse):
        super().__init__(list)
        with open(path) as raw:
            for line in raw:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4:
                    self[(parts[1], parts[2])].append((int(parts[0]), parse(parts[3])))

    def values(self, cell, peer, key):
        """`key` in every round, in round order (None where absent)."""
        return [number(f, key) for _, f in sorted(self.get((cell, peer), []))]

    def median(self, cell, peer, key):
        got = [v for v in self.values(cell, peer, key) if v is not None]
        return statistics.median(got) if got else None

    def total(self, cell, peer, key):
        return sum(int(v or 0) for v in self.values(cell, peer, key))


def read_tsv(path, width):
    """The rows of a tab-separated file, each padded or cut to `width` fields."""
    with open(path) as lines:
        return [(line.rstrip("\n").split("\t") + [""] * width)[:width] for line in lines]


def write_report(path, lines):
    """Writes the markdown `lines` to `path` and prints them."""
    text = "\n".join(lines)
    with open(path, "w") as md:
        md.write(text + "\n")
    print(text)


def table_arguments(doc, *required):
    """The arguments of a report script's table: RAW STATUS, then --header, --peers, --cells,
    the script's own `required` options, and --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("status")
    for name in ("--header", "--peers", "--cells", *required, "--out"):
        parser.add_argument(name, required=True)
    return parser.parse_args()


def not_measured(status, broken=None):
    """The "Not measured" section: peers whose status is not ok, and (cell, peer) pairs that
    failed; empty when everything was measured."""
    notes = [f"- {p}: {s[0]}: {s[1]}" for p, s in status.items() if s[0] != "ok"]
    notes += [f"- {p}, cell {c}: {reason}" for (c, p), reason in (broken or {}).items()]
    return ["## Not measured", "", *notes, ""] if notes else []


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(args):
    runs = defaultdict(list)  # (test, peer) -> [(round, fields)]
    with open(args.raw) as raw:
        for line in raw:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                runs[(parts[1], parts[2])].append((int(parts[0]), parse_fields(parts[3])))
    status = {}
    with open(args.status) as lines:
        for line in lines:
            peer, state, message = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            status[peer] = (state, message)
    peers = args.peers.split()
    proxies = [p for p in peers if p != "direct"]

    metrics = [  # (test, row label, key, higher is better)
        ("tput-1", "throughput, 1 stream (Gbit/s)", "gbps", True),
        ("tput-8", "throughput, 8 streams (Gbit/s)", "gbps", True),
        ("tput-1R", "throughput, 1 stream, reverse (Gbit/s)", "gbps", True),
        ("cps", f"new TLS conns/s (concurrency {args.concurrency})", "conn_per_s", True),
        ("cps", "proxy CPU per new connection (µs)", "cpu_us_per_conn", False),
        ("lat", f"connect→first byte p50 (µs) at {args.rate}/s", "p50_us", False),
        ("lat", f"connect→first byte p99 (µs) at {args.rate}/s", "p99_us", False),
    ]
    metrics = [m for m in metrics if any((m[0], p) in runs for p in peers)]

    def values(test, peer, key):
        return [(r, number(f, key)) for r, f in sorted(runs.get((test, peer), []))]

    def median(test, peer, key):
        got = [v for _, v in values(test, peer, key) if v is not None]
        return statistics.median(got) if got else None

    def cell_missing(peer):
        state, _ = status.get(peer, ("missing", ""))
        return state if state != "ok" else "—"

    absolute, to_direct, to_best, spread, errors, busy = [], [], [], [], [], []
    for test, label, key, higher in metrics:
        med = {p: median(test, p, key) for p in peers}
        peer_values = {p: med[p] for p in PROXIES_NOT_OURS if p in med and med[p] is not None}
        best = None
        if peer_values:
            pick = max if higher else min
            best = pick(peer_values, key=peer_values.get)
        direct = med.get("direct")

        row = [label]
        for p in peers:
            row.append(fmt(med[p], key) if med[p] is not None else cell_missing(p))
        row.append(best or "—")
        absolute.append(row)

        if direct is not None:  # rows about the proxy's own cost have no direct figure
            row = [label]
            for p in proxies:
                ok = med[p] is not None and direct
                row.append(f"{med[p] / direct:.2f}×" if ok else cell_missing(p))
            to_direct.append(row)

        row = [label + f" — best peer: {best or '—'}"]
        for p in proxies:
            ok = med[p] is not None and best is not None and peer_values[best]
            row.append(f"{med[p] / peer_values[best]:.2f}×" if ok else cell_missing(p))
        to_best.append(row)

        row = [label]
        for p in peers:
            got = values(test, p, key)
            row.append(" / ".join(fmt(v, key) for _, v in got) if got else cell_missing(p))
        spread.append(row)

    seen = []
    for test, label, _, _ in metrics:
        if test in seen:
            continue
        seen.append(test)
        label = label.split(" p50")[0] if test == "lat" else label
        row = [label]
        for p in proxies:
            pct = median(test, p, "cpu_pct")
            row.append(f"{pct:.0f}%" if pct is not None else cell_missing(p))
        busy.append(row)
        row = [label]
        for p in peers:
            counts = [int(number(f, "errors") or 0) for _, f in sorted(runs.get((test, p), []))]
            if not counts:
                row.append(cell_missing(p))
                continue
            detail = ", ".join(
                f"{k}={v}"
                for _, f in sorted(runs[(test, p)])
                for k, v in f.items()
                if k in ("connect", "handshake", "read", "greeting", "timeout", "overload", "reason")
                and v not in ("0", "")
            )
            row.append(f"{sum(counts)}" + (f" ({detail})" if detail else ""))
        errors.append(row)

    out = [open(args.header).read().rstrip(), ""]
    out += ["## Medians", "", table(absolute, ["metric", *peers, "best peer"]), ""]
    out += [
        "## Each proxy relative to direct (no proxy)",
        "",
        "Throughput and conns/s: fraction of the ceiling (1.00× = no cost). "
        "Latency: multiple of the direct latency (1.00× = no added delay).",
        "",
        table(to_direct, ["metric", *proxies]),
        "",
    ]
    out += [
        "## Each proxy relative to the best peer (best of Traefik, HAProxy, nginx)",
        "",
        "Throughput and conns/s: above 1.00× beats the best peer. "
        "Latency: below 1.00× beats the best peer.",
        "",
        table(to_best, ["metric", *proxies]),
        "",
    ]
    out += [
        "## Errors (sum over rounds; by kind where known)",
        "",
        table(errors, ["test", *peers]),
        "",
    ]
    out += [
        "## Proxy CPU use during each test (median; 100% = one core busy)",
        "",
        "Near 100%: the proxy was the bottleneck. Well below: the load side was, and the "
        "figure to compare is the proxy's CPU cost rather than the rate.",
        "",
        table(busy, ["test", *proxies]),
        "",
    ]
    out += ["## Every round (round 1 / 2 / …)", "", table(spread, ["metric", *peers]), ""]
    notes = [f"- {p}: {status[p][0]}: {status[p][1]}" for p in peers if status.get(p, ("ok",))[0] != "ok"]
    if notes:
        out += ["## Peers not measured", "", *notes, ""]
    text = "\n".join(out)
    with open(args.out, "w") as md:
        md.write(text + "\n")
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("iperf")
    tab = sub.add_parser("table")
    tab.add_argument("raw")
    tab.add_argument("status")
    tab.add_argument("--header", required=True)
    tab.add_argument("--peers", required=True)
    tab.add_argument("--concurrency", required=True)
    tab.add_argument("--rate", required=True)
    tab.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "iperf":
        print(iperf_line(sys.stdin.read()))
    else:
        render(args)


if __name__ == "__main__":
    main()
