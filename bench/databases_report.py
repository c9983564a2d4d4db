#!/usr/bin/env python3
"""Parsing and tables for bench/databases.sh.

  databases_report.py pgbench                 pgbench's output on stdin -> one key=value line
  databases_report.py redis --errors FILE     redis-benchmark --csv on stdin (its stderr in
                                              FILE) -> one key=value line
  databases_report.py table RAW --header MD --out MD
                                              raw.tsv (round, suite, path, key=value line) ->
                                              markdown tables, printed and written to --out
"""

import argparse
import csv
import re
import statistics
import sys

PATH_NAMES = {
    ("pg", "direct"): "direct (TLS to the server)",
    ("pg", "pass"): "sallyport, TLS passthrough by SNI",
    ("pg", "term"): "sallyport, TLS terminated",
    ("pg", "haproxy"): "HAProxy, TCP relay (no routing)",
    ("redis", "direct"): "direct (TLS to the server)",
    ("redis", "pass"): "sallyport, TLS passthrough by SNI",
    ("redis", "haproxy"): "HAProxy, TLS passthrough by SNI",
}
TARGET = 0.95  # passthrough within 5% of direct


def pgbench(text):
    """tps (without connection set-up), average latency, transactions and errors: failed
    transactions, error lines, and an aborted or result-less run."""
    out = {}
    m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", text, re.M)
    if m:
        out["tps"] = m.group(1)
    m = re.search(r"^latency average = ([\d.]+) ms", text, re.M)
    if m:
        out["lat_ms"] = m.group(1)
    m = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
    if m:
        out["txns"] = m.group(1)
    failed = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    errors = int(failed.group(1)) if failed else 0
    errors += len(re.findall(r"error:", text, re.I))
    if "tps" not in out or "aborted" in text:
        errors = max(errors, 1)
    out["errors"] = str(errors)
    return " ".join(f"{k}={v}" for k, v in out.items())


def redis(text, errors_file):
    """Requests per second and p50 latency of GET and SET, and the error lines
    redis-benchmark wrote to stderr."""
    out = {}
    for row in csv.DictReader(text.splitlines()):
        test = row.get("test", "").lower()
        if test in ("get", "set"):
            out[f"{test}_rps"] = row["rps"]
            out[f"{test}_p50_ms"] = row["p50_latency_ms"]
    errors = 0
    if errors_file:
        try:
            with open(errors_file, encoding="utf-8", errors="replace") as f:
                errors = sum(1 for line in f if re.search(r"error|could not", line, re.I))
        except OSError:
            pass
    if "get_rps" not in out or "set_rps" not in out:
        errors = max(errors, 1)
    out["errors"] = str(errors)
    return " ".join(f"{k}={v}" for k, v in out.items())


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def num(d, key):
    try:
        return float(d[key])
    except (KeyError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(v, base):
    if v is None or not base:
        return "–"
    return f"{v / base:.3f}×"


def table(raw, header, out):
    runs = {}  # (suite, path) -> [fields per round]
    with open(raw, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) == 4:
                runs.setdefault((parts[1], parts[2]), []).append(fields(parts[3]))
    lines = [open(header, encoding="utf-8").read().rstrip(), ""]
    verdicts = []

    pg = {
        path: runs[("pg", path)]
        for path in ("direct", "pass", "term", "haproxy")
        if ("pg", path) in runs
    }
    if pg:
        base = median(num(r, "tps") for r in pg.get("direct", []))
        lines += [
            "## PostgreSQL: pgbench select-only",
            "",
            "| path | tps | × direct | latency ms | proxy CPU µs/txn | errors | every round (tps) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for path, rs in pg.items():
            tps = median(num(r, "tps") for r in rs)
            cpu = median(
                1e6 * num(r, "proxy_cpu_s") / num(r, "txns")
                if num(r, "proxy_cpu_s") is not None and num(r, "txns")
                else None
                for r in rs
            )
            errors = sum(int(r.get("errors", "1")) for r in rs)
            every = " / ".join(fmt(num(r, "tps")) for r in rs)
            lines.append(
                f"| {PATH_NAMES['pg', path]} | {fmt(tps)} | {ratio(tps, base)} | "
                f"{fmt(median(num(r, 'lat_ms') for r in rs), 3)} | {fmt(cpu, 1)} | {errors} | {every} |"
            )
            if path in ("pass", "haproxy") and tps is not None and base:
                verdicts.append((f"PostgreSQL, {PATH_NAMES['pg', path]}", tps / base))
        lines.append("")

    rd = {
        path: runs[("redis", path)]
        for path in ("direct", "pass", "haproxy")
        if ("redis", path) in runs
    }
    if rd:
        base = {t: median(num(r, f"{t}_rps") for r in rd.get("direct", [])) for t in ("get", "set")}
        lines += [
            "## Redis: redis-benchmark over TLS",
            "",
            "| path | GET req/s | × direct | SET req/s | × direct | p50 GET / SET ms | proxy CPU µs/req | errors | every round (GET / SET req/s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for path, rs in rd.items():
            rps = {t: median(num(r, f"{t}_rps") for r in rs) for t in ("get", "set")}
            cpu = median(
                1e6 * num(r, "proxy_cpu_s") / num(r, "requests")
                if num(r, "proxy_cpu_s") is not None and num(r, "requests")
                else None
                for r in rs
            )
            errors = sum(int(r.get("errors", "1")) for r in rs)
            every = " · ".join(
                f"{fmt(num(r, 'get_rps'))} / {fmt(num(r, 'set_rps'))}" for r in rs
            )
            p50 = (
                f"{fmt(median(num(r, 'get_p50_ms') for r in rs), 3)} / "
                f"{fmt(median(num(r, 'set_p50_ms') for r in rs), 3)}"
            )
            lines.append(
                f"| {PATH_NAMES['redis', path]} | {fmt(rps['get'])} | {ratio(rps['get'], base['get'])} | "
                f"{fmt(rps['set'])} | {ratio(rps['set'], base['set'])} | {p50} | {fmt(cpu, 1)} | "
                f"{errors} | {every} |"
            )
            if path in ("pass", "haproxy"):
                for t in ("get", "set"):
                    if rps[t] is not None and base[t]:
                        name = f"Redis {t.upper()}, {PATH_NAMES['redis', path]}"
                        verdicts.append((name, rps[t] / base[t]))
        lines.append("")

    if verdicts:
        lines += ["## Target: passthrough within 5% of direct (HAProxy for reference)", ""]
        for name, r in verdicts:
            met = "met" if r >= TARGET else "**not met**"
            lines.append(f"- {name}: {r:.3f}× direct — {met}")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pgbench", "redis", "table"])
    p.add_argument("raw", nargs="?")
    p.add_argument("--errors")
    p.add_argument("--header")
    p.add_argument("--out")
    a = p.parse_args()
    if a.mode == "pgbench":
        print(pgbench(sys.stdin.read()))
    elif a.mode == "redis":
        print(redis(sys.stdin.read(), a.errors))
    else:
        table(a.raw, a.header, a.out)


if __name__ == "__main__":
    main()
