#!/usr/bin/env python3
"""Table of the attack benchmark (bench/attacks.sh) from its raw.tsv.

Each line of raw.tsv is: attack, peer, phase (baseline or attack), and one line of
key=value pairs (with `round=N` when the benchmark ran several interleaved rounds). The table
puts the normal client's figures alone and under attack side by side, with what the attack
cost the proxy: with several rounds, the median of each figure over the rounds, followed by
every round's values of the figures that matter most.
"""

import argparse
import statistics
import sys


def fields(line):
    out = {}
    for pair in line.split():
        if "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
    return out


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def merged(runs):
    """One run of the medians of several: numbers by their median, words kept when every run
    agrees and joined with '/' when they do not."""
    out = {}
    keys = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    for key in keys:
        values = [run[key] for run in runs if key in run]
        numbers = [num(v) for v in values]
        if all(n is not None for n in numbers):
            out[key] = f"{statistics.median(numbers):g}"
        elif len(set(values)) == 1:
            out[key] = values[0]
        else:
            out[key] = "/".join(values)
    return out


def ms(us):
    value = num(us)
    return "–" if value is None else f"{value / 1000:.1f}"


def rate(run):
    # HTTP: successful responses per second; UDP: answered datagrams per second.
    value = num(run.get("rps", run.get("datagrams_per_s")))
    return "–" if value is None else f"{value:.0f}"


def errors(run):
    total = 0
    for key in ("errors", "non2xx", "lost"):
        value = num(run.get(key))
        if value:
            total += value
    return f"{total:.0f}"


ATTACK_UNITS = {
    "streams": "streams",
    "frames": "CONTINUATION frames",
    "header_lines": "header lines",
    "handshakes": "handshakes",
    "stalled": "stalled hellos",
    "datagrams": "datagrams",
}


def attack_rate(run):
    for key, label in ATTACK_UNITS.items():
        value = num(run.get(f"attack_{key}_per_s"))
        if value is not None:
            closed = run.get("attack_closed_by_server", "?")
            conns = run.get("attack_connections", "?")
            return f"{value:.0f} {label}/s; {conns} conns, {closed} closed by proxy"
    return "attacker gave no figures"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("raw")
    parser.add_argument("--header")
    parser.add_argument("--out")
    args = parser.parse_args()

    runs = {}
    order = []
    with open(args.raw, encoding="utf-8") as raw:
        for line in raw:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) != 4:
                continue
            attack, peer, phase, values = parts
            if (attack, peer) not in runs:
                order.append((attack, peer))
            runs.setdefault((attack, peer), {}).setdefault(phase, []).append(fields(values))
    rounds = max((len(r) for phases in runs.values() for r in phases.values()), default=1)

    lines = []
    if args.header:
        with open(args.header, encoding="utf-8") as header:
            lines.append(header.read().rstrip("\n"))
            lines.append("")
    lines.append(
        "| attack | peer | normal req/s alone → attacked | p50 ms alone → attacked "
        "| p99 ms alone → attacked | errors alone → attacked | proxy CPU s alone → attacked "
        "| peak RSS MiB (after) | up | attack sent |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for attack, peer in order:
        base = merged(runs[(attack, peer)].get("baseline", []))
        hit = merged(runs[(attack, peer)].get("attack", []))
        peak = num(hit.get("peak_rss_kb"))
        after = num(hit.get("rss_after_kb"))
        rss = "–" if peak is None else f"{peak / 1024:.0f}"
        if after is not None:
            rss += f" ({after / 1024:.0f})"
        lines.append(
            f"| {attack} | {peer} | {rate(base)} → {rate(hit)} "
            f"| {ms(base.get('p50_us'))} → {ms(hit.get('p50_us'))} "
            f"| {ms(base.get('p99_us'))} → {ms(hit.get('p99_us'))} "
            f"| {errors(base)} → {errors(hit)} "
            f"| {base.get('proxy_cpu_s', '–')} → {hit.get('proxy_cpu_s', '–')} "
            f"| {rss} | {hit.get('up', '?')} | {attack_rate(hit)} |"
        )
    if rounds > 1:
        lines.append("")
        lines.append(
            f"Medians of {rounds} interleaved rounds. Every round (p99 ms alone → attacked; "
            "proxy CPU s under attack; peak RSS MiB; what the attack sent):"
        )
        lines.append("")
        lines.append("| attack | peer | round | p99 ms | proxy CPU s | peak RSS MiB | attack sent |")
        lines.append("|---|---|---|---|---|---|---|")
        for attack, peer in order:
            bases = runs[(attack, peer)].get("baseline", [])
            hits = runs[(attack, peer)].get("attack", [])
            for index, hit in enumerate(hits):
                base = bases[index] if index < len(bases) else {}
                peak = num(hit.get("peak_rss_kb"))
                lines.append(
                    f"| {attack} | {peer} | {hit.get('round', index + 1)} "
                    f"| {ms(base.get('p99_us'))} → {ms(hit.get('p99_us'))} "
                    f"| {hit.get('proxy_cpu_s', '–')} "
                    f"| {'–' if peak is None else f'{peak / 1024:.0f}'} | {attack_rate(hit)} |"
                )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main()
