#!/usr/bin/env python3
"""Tables for bench/udp_proxy.sh.

  udp_report.py RAW STATUS --header H --peers P --cells C --out OUT

RAW has one line per run: `round<TAB>cell<TAB>peer<TAB>key=value ...`, where the keys are
udp-load's (sent, received, lost, late, malformed, errors, datagrams_per_s, mbit_s, p50_us,
p99_us) plus wall_s and proxy_cpu_s from the harness. A cell is FLOWS-BYTES.
STATUS has one line per peer: `peer<TAB>ok|skipped|failed<TAB>message`.
"""


from report import Runs, not_measured, number, read_tsv, table, table_arguments, write_report


def parse_fields(text):
    fields = dict(item.partition("=")[::2] for item in text.split())
    cpu, wall, received = (number(fields, k) for k in ("proxy_cpu_s", "wall_s", "received"))
    if cpu is not None and wall:
        fields["cpu_pct"] = str(100 * cpu / wall)
    if cpu is not None and received:
        fields["cpu_us_per_dgram"] = str(1e6 * cpu / received)
    return fields


def cell_title(cell):
    flows, size = cell.split("-")
    return f"{flows} flow{'s' if flows != '1' else ''}, {size} B datagrams"


def render(args):
    runs = Runs(args.raw, parse_fields)  # (cell, peer) -> [(round, fields)]
    status = {row[0]: tuple(row[1:]) for row in read_tsv(args.status, 3)}
    peers = args.peers.split()
    cells = args.cells.split()
    values, median, total = runs.values, runs.median, runs.total

    def missing(peer):
        state = status.get(peer, ("missing",))[0]
        return state if state != "ok" else "—"

    def ratio(cell, peer, base):
        mine, ref = median(cell, peer, "datagrams_per_s"), median(cell, base, "datagrams_per_s")
        return f"{mine / ref:.2f}×" if mine is not None and ref else "—"

    def errors_cell(cell, peer):
        kinds = {k: total(cell, peer, k) for k in ("late", "malformed", "errors")}
        reasons = sorted({f["reason"] for _, f in runs[(cell, peer)] if f.get("reason")})
        reasons += ["proxy-exited"] if any(f.get("exited") for _, f in runs[(cell, peer)]) else []
        detail = [f"{k} {v}" for k, v in kinds.items() if v] + reasons
        return ", ".join(detail) if detail else "0"

    def row(cell, peer):
        if (cell, peer) not in runs:
            return [peer, missing(peer)] + ["—"] * 10
        rate = median(cell, peer, "datagrams_per_s")
        mbit = median(cell, peer, "mbit_s")
        sent = total(cell, peer, "sent")
        lost = total(cell, peer, "lost")
        cpu = median(cell, peer, "cpu_pct")
        per = median(cell, peer, "cpu_us_per_dgram")
        p50, p99 = median(cell, peer, "p50_us"), median(cell, peer, "p99_us")
        return [
            peer,
            f"{rate:.0f}" if rate is not None else "—",
            f"{mbit:.0f}" if mbit is not None else "—",
            ratio(cell, peer, "direct"),
            ratio(cell, peer, "nginx"),
            ratio(cell, peer, "traefik"),
            f"{p50:.0f}" if p50 is not None else "—",
            f"{p99:.0f}" if p99 is not None else "—",
            f"{lost} ({100 * lost / sent:.3f}%)" if sent else str(lost),
            errors_cell(cell, peer),
            f"{cpu:.0f}%" if cpu is not None else "—",
            f"{per:.2f}" if per is not None else "—",
        ]

    head = ["peer", "datagrams/s", "Mbit/s", "× direct", "× nginx", "× Traefik", "RTT p50 (µs)",
            "RTT p99 (µs)", "lost (of sent)", "late / errors", "proxy CPU", "proxy CPU µs/datagram"]
    out = [open(args.header).read().rstrip(), ""]
    out += [
        "datagrams/s (answers received per second), Mbit/s (their payload, one way) and RTT: "
        "median over rounds; lost, late and errors: sums over rounds; proxy CPU: median, 100% = "
        "one core, and CPU time per answered datagram. A proxy near 100% CPU was the bottleneck; "
        "direct is the ceiling of the load core (udp-load and the echo share it).",
        "",
    ]
    for cell in cells:
        out += [f"## {cell_title(cell)}", "", table([row(cell, p) for p in peers], head), ""]

    spread = []
    for cell in cells:
        for peer in peers:
            if (cell, peer) not in runs:
                continue
            rates = values(cell, peer, "datagrams_per_s")
            p99 = values(cell, peer, "p99_us")
            spread.append([cell, peer, " / ".join("—" if v is None else f"{v:.0f}" for v in rates),
                           " / ".join("—" if v is None else f"{v:.0f}" for v in p99)])
    out += ["## Every round (round 1 / 2 / …)", "",
            table(spread, ["cell", "peer", "datagrams/s", "RTT p99 (µs)"]), ""]
    out += not_measured(status)
    write_report(args.out, out)


def main():
    render(table_arguments(__doc__))


if __name__ == "__main__":
    main()
