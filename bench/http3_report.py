#!/usr/bin/env python3
"""Tables for bench/http3.sh.

  http3_report.py RAW STATUS --header H --peers P --cells C --cells-failed F --out OUT

RAW has one line per run: `round<TAB>cell<TAB>peer<TAB>key=value ...`, where the keys are
h3-load's (responses, non2xx, errors, connect, stream, body, timeout, rps, mbit_s, p50_us,
p99_us) plus wall_s, proxy_cpu_s, client_cpu_s (h3-load) and backend_cpu_s from the harness. A cell is
BODY-CONNECTIONSxSTREAMS. STATUS has one line per peer: `peer<TAB>ok|skipped|failed<TAB>message`;
CELLS_FAILED one per cell a peer was not measured on: `peer<TAB>cell<TAB>reason`.
"""


from report import Runs, not_measured, number, read_tsv, table, table_arguments, write_report

ERROR_KINDS = ("connect", "stream", "body", "timeout")


def parse_fields(text):
    fields = dict(item.partition("=")[::2] for item in text.split())
    wall = number(fields, "wall_s")
    for who in ("proxy", "client", "backend"):
        cpu = number(fields, f"{who}_cpu_s")
        if cpu is not None and wall:
            fields[f"{who}_cpu_pct"] = str(100 * cpu / wall)
    # The load core runs h3-load and the backends.
    client, backend = number(fields, "client_cpu_pct"), number(fields, "backend_cpu_pct")
    if client is not None and backend is not None:
        fields["load_cpu_pct"] = str(client + backend)
    cpu, responses = number(fields, "proxy_cpu_s"), number(fields, "responses")
    if cpu is not None and responses:
        fields["cpu_us_per_req"] = str(1e6 * cpu / responses)
    return fields


def cell_title(cell):
    body, shape = cell.split("-")
    conns, streams = shape.split("x")
    size = "64 KiB" if body == "64k" else "small"
    plural = "s" if conns != "1" else ""
    return f"{conns} connection{plural} × {streams} streams, {size} body"


def render(args):
    runs = Runs(args.raw, parse_fields)  # (cell, peer) -> [(round, fields)]
    status = {row[0]: tuple(row[1:]) for row in read_tsv(args.status, 3)}
    broken = {(row[1], row[0]): row[2] for row in read_tsv(args.cells_failed, 3)}
    peers = args.peers.split()
    cells = args.cells.split()
    values, median, total = runs.values, runs.median, runs.total

    def missing(cell, peer):
        state = status.get(peer, ("missing",))[0]
        if state == "ok" and (cell, peer) in broken:
            return "probe failed"
        return state if state != "ok" else "—"

    def ratio(cell, peer, base):
        mine, ref = median(cell, peer, "rps"), median(cell, base, "rps")
        return f"{mine / ref:.2f}×" if mine is not None and ref else "—"

    def errors_cell(cell, peer):
        kinds = {k: total(cell, peer, k) for k in ERROR_KINDS}
        reasons = sorted({f["reason"] for _, f in runs[(cell, peer)] if f.get("reason")})
        reasons += ["proxy-exited"] if any(f.get("exited") for _, f in runs[(cell, peer)]) else []
        detail = [f"{k} {v}" for k, v in kinds.items() if v] + reasons
        return ", ".join(detail) if detail else "0"

    def show(value, digits=0, suffix=""):
        return "—" if value is None else f"{value:.{digits}f}{suffix}"

    def row(cell, peer):
        if (cell, peer) not in runs:
            return [peer, missing(cell, peer)] + ["—"] * 11
        p50, p99 = median(cell, peer, "p50_us"), median(cell, peer, "p99_us")
        return [
            peer,
            show(median(cell, peer, "rps")),
            show(median(cell, peer, "mbit_s")),
            ratio(cell, peer, "caddy"),
            ratio(cell, peer, "traefik"),
            show(None if p50 is None else p50 / 1000, 2),
            show(None if p99 is None else p99 / 1000, 2),
            str(total(cell, peer, "non2xx")),
            errors_cell(cell, peer),
            show(median(cell, peer, "proxy_cpu_pct"), suffix="%"),
            show(median(cell, peer, "cpu_us_per_req"), 1),
            show(median(cell, peer, "client_cpu_pct"), suffix="%"),
            show(median(cell, peer, "load_cpu_pct"), suffix="%"),
        ]

    head = ["peer", "req/s", "body Mbit/s", "× Caddy", "× Traefik", "p50 (ms)", "p99 (ms)",
            "non-2xx", "errors", "proxy CPU", "proxy CPU µs/req", "h3-load CPU",
            "load core CPU"]
    out = [open(args.header).read().rstrip(), ""]
    out += [
        "req/s (responses received per second), body Mbit/s and latency: median over rounds; "
        "non-2xx and errors: sums over rounds; CPU: median, 100% = one core, and the proxy's "
        "CPU time per response; load core CPU is h3-load plus the backends, which share a core. "
        "A proxy near 100% CPU was the bottleneck; a load core near 100% means the load side "
        "was.",
        "",
    ]
    for cell in cells:
        out += [f"## {cell_title(cell)}", "", table([row(cell, p) for p in peers], head), ""]

    spread = []
    for cell in cells:
        for peer in peers:
            if (cell, peer) not in runs:
                continue
            rates = values(cell, peer, "rps")
            p99 = values(cell, peer, "p99_us")
            spread.append([cell, peer, " / ".join(show(v) for v in rates),
                           " / ".join(show(None if v is None else v / 1000, 2) for v in p99)])
    out += ["## Every round (round 1 / 2 / …)", "",
            table(spread, ["cell", "peer", "req/s", "p99 (ms)"]), ""]
    out += not_measured(status, broken)
    write_report(args.out, out)


def main():
    render(table_arguments(__doc__, "--cells-failed"))


if __name__ == "__main__":
    main()
