#!/usr/bin/env python3
"""tools/bench/run's last step: the phases' JSON files in, the table (figure, baseline, ratio, bar, verdict) out on
stdout, and one JSON file with every figure and the run's metadata, for comparing runs.

    report.py RESULTS_DIR OUT.json key=value ...
"""
import json
import os
import sys


def load(directory):
    results = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                text = f.read().strip()
            try:
                results[name[:-5]] = json.loads(text) if text else None
            except json.JSONDecodeError:
                results[name[:-5]] = {"unparsed": text[:2000]}
    return results


def n(x, digits=0):
    if x is None:
        return "-"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{x:,.0f}"


def rows(r, meta):
    out = []

    def row(id_, what, figure, baseline, ratio, bar, ok, note=""):
        verdict = "-" if ok is None else ("pass" if ok else "FAIL")
        out.append({"id": id_, "what": what, "figure": figure, "baseline": baseline,
                    "ratio": ratio, "bar": bar, "verdict": verdict, "note": note})

    p1, e1 = r.get("p1") or {}, r.get("p1_events") or {}
    one, hundred = r.get("pgbench_1") or {}, r.get("pgbench_100") or {}
    eps = e1.get("events_per_s")
    one_rate, hundred_rate = one.get("rows_per_s"), hundred.get("rows_per_s")
    if eps is not None and one_rate:
        errors = p1.get("errors", 0)
        row("P1", "lifecycle events/s", f"{n(eps)} ({n(p1.get('rate'))} cmd/s, {errors} errors)",
            f"pgbench 1-row tx, 32 clients: {n(one_rate)} rows/s", f"{eps / one_rate:.2f}", ">= 3", eps >= 3 * one_rate)
    if eps is not None and hundred_rate:
        row("P1", "  vs the ceiling", n(eps), f"pgbench 100-row tx, 4 clients: {n(hundred_rate)} rows/s",
            f"{eps / hundred_rate:.3f}", "toward 0.5", eps >= 0.5 * hundred_rate)
    p2 = r.get("p2")
    if p2:
        lat = p2["latency_ms"]
        row("P2", "latency p50 / p99 (ms)", f"{lat['p50']:.2f} / {lat['p99']:.2f} (max {lat['max']:.1f})",
            f"at {n(p2.get('target_rate'))} cmd/s, reached {n(p2.get('rate'))}", "-", "p99 <= 10 ms",
            lat["p99"] <= 10 and p2.get("errors", 0) == 0)
    p3 = r.get("p3")
    if p3:
        full = p3["timers"] >= 100000
        row("P3", "timer lateness p99 (ms)",
            f"{n(p3['p99'])} (p50 {n(p3['p50'])}, max {n(p3['max'])}); lost {p3['lost']}, doubled {p3['doubled']}",
            f"{n(p3['timers'])} timers, {p3['timeout_s']} s timeout", "-", "p99 <= 100; 0 lost, 0 doubled",
            (p3["p99"] or 1e9) <= 100 and p3["lost"] == 0 and p3["doubled"] == 0,
            "" if full else "fewer than the bar's 100,000 timers")
    p4 = r.get("p4_lag")
    if p4:
        row("P4", "projector lag p99 (ms)", f"{n(p4['p99'])} (p50 {n(p4['p50'])}, max {n(p4['max'])})",
            f"{n(p4['sessions'])} sessions after P1", "-", "<= 250 ms", (p4["p99"] or 1e9) <= 250)
    p7 = r.get("p7")
    if p7:
        base = p7["events"] / p7["baseline_s"] if p7["baseline_s"] else None
        rb = p7["rebuild_events_per_s"]
        row("P4", "rebuild events/s", f"{n(rb)} ({n(p7['events'])} events)",
            f"psql read: {n(base)} events/s", f"{rb / base:.2f}" if base else "-", ">= 100,000/s", rb >= 100000)
    p5 = r.get("p5")
    if p5:
        for kind in ("inline", "bulk"):
            o, s = p5[f"otpd_{kind}"], p5[f"redis_{kind}"]
            row("P5", f"PING {kind} -P 16 (req/s)", n(o), f"redis-server: {n(s)}", f"{o / s:.2f}" if s else "-",
                ">= 0.5", s > 0 and o >= 0.5 * s)
    p6, idle = r.get("p6"), r.get("p6_idle") or {}
    if p6:
        mb = p6["rss_kb"] / 1024
        full = p6["sessions"] >= 1000000
        row("P6", "otpd RSS (MB)", f"{mb:.0f} with {n(p6['sessions'])} sessions", "-", "-", "<= 200 MB at 1,000,000",
            mb <= 200 if full else None, "" if full else "fewer sessions than the bar's 1,000,000: no verdict")
        extra = (p6["rss_idle_kb"] - p6["rss_kb"]) / 1024
        opened = idle.get("open", 0)
        row("P6", "extra RSS, idle connections (MB)", f"{extra:.0f} for {n(opened)} open", "-", "-",
            "<= 100 MB for 10,000", extra <= 100 and opened >= 10000,
            "" if opened >= 10000 else f"only {opened} of {p6['idle_connections']} connections open")
    if p7:
        base = p7["events"] / p7["baseline_s"] if p7["baseline_s"] else None
        rp = p7["replay_events_per_s"]
        row("P7", "replay --all events/s", f"{n(rp)} ({n(p7['events'])} events)", f"psql read: {n(base)} events/s",
            f"{rp / base:.2f}" if base else "-", ">= 200,000/s", rp >= 200000)
    a, b = r.get("p8_empty_cpu"), r.get("p8_loaded_cpu")
    if a and b:
        ratio = b["cpu_ms_per_issue"] / a["cpu_ms_per_issue"] if a["cpu_ms_per_issue"] else None
        full = b["events_stored"] >= 10000000
        row("P8", "CPU per ISSUE (ms)", f"{b['cpu_ms_per_issue']:.2f} with {n(b['events_stored'])} events stored",
            f"{a['cpu_ms_per_issue']:.2f} with {n(a['events_stored'])}", f"{ratio:.2f}" if ratio else "-",
            "<= 1.2 at 10,000,000", (ratio <= 1.2) if (full and ratio) else None,
            ("" if full else "a history shorter than the bar's 10,000,000 events: no verdict")
            + ("" if b.get("includes_postgres") else "; otpd only (the cluster is not ours)"))
    return out


def table(out):
    headers = ["id", "what", "figure", "baseline", "ratio", "bar", "verdict"]
    widths = [max(len(h), *(len(str(o[h])) for o in out)) for h in headers]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    for o in out:
        lines.append("| " + " | ".join(str(o[h]).ljust(w) for h, w in zip(headers, widths)) + " |")
    notes = [f"{o['id']} {o['what'].strip()}: {o['note']}" for o in out if o["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def main():
    directory, path = sys.argv[1], sys.argv[2]
    meta = dict(arg.split("=", 1) for arg in sys.argv[3:])
    results = load(directory)
    out = rows(results, meta)
    print()
    print(f"otpd benchmark, {meta.get('mode')} run, {meta.get('when')}: otpd {meta.get('otpd')}, checkout at {meta.get('commit')},"
          f" PostgreSQL {meta.get('postgres')}, {meta.get('cpus')} cores")
    print(table(out))
    with open(path, "w") as f:
        json.dump({"meta": meta, "table": out, "results": results}, f, indent=2)
        f.write("\n")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
