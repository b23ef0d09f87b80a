"""The printing of benchmarks/run.py: number formatting, Markdown tables, which results to
aggregate (usable), and the final report (summary table, W3 GEMM, time to first step, bars,
problems)."""
from __future__ import annotations

import statistics

from specs import w3_matmul_flops

TITLES = {"W1": "W1 tiny", "W2": "W2 mnist-small", "W3": "W3 mnist-wide", "W4": "W4 norm-dropout"}
# the bars of the issue: nncc's steps/s over numpy's at least; E1: nncc's epoch time over
# numpy's at most; W3 matmul rate over numpy's 2048^3 sgemm rate; W2 time to first step
SPEED_BARS = {"W1": 5.0, "W2": 2.0, "W3": 1.1, "W4": 1.5}
E1_BAR, GEMM_BAR, COLD_BAR_S, WARM_BAR_S = 0.45, 0.90, 1.0, 0.050


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------
def fmt_num(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def spread(values, fmt=fmt_num):
    """'median [min-max]' of a list of numbers."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"


def table(rows, headers, align=None):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    align = align or ["<"] + [">"] * (len(headers) - 1)
    line = lambda r: "| " + " | ".join(f"{str(c):{a}{w}}" for c, a, w in zip(r, align, widths)) + " |"
    out = [line(headers), "|" + "|".join(("-" * (w + 1) + ":") if a == ">" else ("-" * (w + 2))
                                         for a, w in zip(align, widths)) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def short_error(rec):
    return rec.get("error", "?").splitlines()[0][:160]


def usable(recs):
    """The ok results to aggregate: the undisturbed ones if there are any, else all."""
    ok = [r for r in recs if r.get("ok") and r.get("finite", True)]
    quiet = [r for r in ok if not r["disturbed"]]
    return quiet or ok, len(ok)


def report(bench, verdict, runner, args, rounds):
    workloads, frameworks = bench.workloads, bench.frameworks
    flops = w3_matmul_flops()
    summary = {"speed": {}, "bars": []}

    def wrong(wl, fw):
        v = verdict.get((wl, fw))
        return (v is not None and v[0] in ("MISMATCH", "ERROR")) or (wl, fw) in bench.mismatch

    def verdict_fail(wl):
        v = verdict.get((wl, "nncc"))
        return "FAIL (check failed)" if v is not None and v[0] == "ERROR" else "FAIL (wrong losses)"

    def cell(wl, fw):
        if fw not in frameworks:
            return "n/a"
        vals, used, total = bench.values(wl, fw)
        recs = bench.results[(wl, fw)]
        summary["speed"][f"{wl}/{fw}"] = {"values": vals, "used": used, "ok_results": total,
                                          "median": statistics.median(vals) if vals else None}
        if not vals:
            return "ERROR" if any(not r.get("ok") for r in recs) else "-"
        text = spread(vals)
        if used < total:
            text += f" ({used}/{total})"
        elif all(r["disturbed"] for r in recs if r.get("ok")):
            text += " (disturbed)"
        if any(not r.get("ok") for r in recs):
            text += f" +{sum(not r.get('ok') for r in recs)} failed"
        if wrong(wl, fw):
            text += " WRONG"
        return text

    def ratio(wl, lower_better):
        n = bench.median(wl, "nncc")
        bases = [bench.median(wl, f) for f in frameworks if f != "nncc" and bench.median(wl, f)]
        if n is None or not bases:
            return "-"
        return f"{n / (min(bases) if lower_better else max(bases)):.2f}x"

    extra = f" + {bench.extra_runs} extra workload round(s)" if bench.extra_runs else ""
    print(f"\n== Summary: median [min-max] over {rounds} round(s){extra}, one process per measurement ==")
    rows = [[f"{TITLES[wl]}, steps/s", cell(wl, "nncc"), cell(wl, "numpy"), cell(wl, "torch"), ratio(wl, False)]
            for wl in workloads if wl != "E1"]
    if "E1" in workloads:
        r = ratio("E1", True)
        rows.append(["E1 epoch, s/epoch (lower is better)", cell("E1", "nncc"), cell("E1", "numpy"),
                     cell("E1", "torch"), r + " (time)" if r != "-" else r])
    print(table(rows, ["workload", "nncc", "numpy", "torch", "nncc/best-baseline"]))
    timed = [x for x in runner.records if x.get("mode") in ("speed", "epoch", "gemm", "matmul8")]
    disturbed = [x for x in timed if x["disturbed"]]
    print("  nncc/best-baseline: nncc's steps/s over the faster baseline's (E1: epoch time over the faster "
          "baseline's).\n  (u/t): median of the u undisturbed of t results. WRONG: losses differ from numpy's.")
    if timed:
        print(f"  noise: others used {statistics.median(x['others_cpu'] for x in timed):.0%} of the CPUs (median "
              f"over {len(timed)} timing runs, max {max(x['others_cpu'] for x in timed):.0%}); {len(disturbed)} "
              f"run(s) disturbed (> {args.contention:.0%})"
              + (" -- figures with only disturbed results are unreliable: re-run when the machine is quieter"
                 if any("(disturbed)" in str(c) for row in rows for c in row) else ""))

    # ---- W3 GEMM ---------------------------------------------------------------------
    gemm_ratio = None
    if "W3" in workloads:
        print(f"\n== W3 matmul throughput: one step's matmuls (3 forward, 3 dW, 2 dX) = {flops / 1e9:.3f} GFLOP ==")
        rows = []
        for fw in frameworks:
            vals, used, total = bench.values("W3", fw)
            if vals:
                rows.append([f"{fw} W3 train step", spread(vals), spread([v * flops / 1e9 for v in vals]),
                             f"{used}/{total}"])
        mm8, mm8_total = usable(bench.mm8)
        if mm8:
            v = [r["steps_per_s"] for r in mm8]
            rows.append(["numpy, the 8 matmuls alone (ceiling)", spread(v), spread([x * flops / 1e9 for x in v]),
                         f"{len(mm8)}/{mm8_total}"])
        gemm, gemm_total = usable(bench.gemm)
        if gemm:
            rows.append(["numpy 2048^3 float32 matmul", "", spread([r["gflops"] for r in gemm]),
                         f"{len(gemm)}/{gemm_total}"])
        print(table(rows, ["", "steps/s", "GFLOP/s", "used"]))
        n = bench.median("W3", "nncc")
        if gemm and n:
            gemm_ratio = n * flops / 1e9 / statistics.median(r["gflops"] for r in gemm)
            print(f"  nncc's W3 matmul rate is {gemm_ratio:.0%} of numpy's 2048^3 sgemm rate")

    # ---- time to first step ----------------------------------------------------------
    cold_w2 = warm_w2 = None
    if bench.ttfs:
        print("\n== nncc time to first step = nncc.compile() + first step; cold: fresh NNCC_CACHE_DIR, warm: "
              "same dir, new process\n   (Python start, `import nncc` and data generation not included) ==")
        rows = []
        for wl, pairs in bench.ttfs.items():
            colds, n_cold = usable([c for c, _ in pairs])
            warms, n_warm = usable([w for _, w in pairs])
            failed = [x for p in pairs for x in p if not x.get("ok")]
            ms = lambda recs, key: spread([r[key] * 1e3 for r in recs], lambda v: f"{v:.1f}")
            rows.append([wl, ms(colds, "total_s"), ms(colds, "first_step_s"), ms(warms, "total_s"),
                         ms(warms, "compile_s"), ms(warms, "first_step_s"), ms(colds + warms, "import_s"),
                         f"{len(failed)} failed: {short_error(failed[0])[:60]}" if failed else ""])
            if wl == "W2":
                cold_w2 = statistics.median(r["total_s"] for r in colds) if colds else None
                warm_w2 = statistics.median(r["total_s"] for r in warms) if warms else None
        print(table(rows, ["workload", "cold total ms", "cold 1st step", "warm total ms", "warm compile()",
                           "warm 1st step", "import nncc", "errors"]))
        for wl, pairs in bench.ttfs.items():
            cold, warm = next(((c, w) for c, w in pairs if c.get("ok") and w.get("ok")), (None, None))
            if cold is None:
                continue
            stages = list(dict.fromkeys([*cold["timings"], *warm["timings"]]))
            fmt = lambda rec, s: f"{rec['timings'][s] * 1e3:.2f}" if s in rec["timings"] else ""
            rows = [[s, fmt(cold, s), fmt(warm, s)] for s in stages]
            rows += [["= compile() total", f"{cold['compile_s'] * 1e3:.2f}", f"{warm['compile_s'] * 1e3:.2f}"],
                     ["first step", f"{cold['first_step_s'] * 1e3:.2f}", f"{warm['first_step_s'] * 1e3:.2f}"],
                     ["(second step)", f"{cold['second_step_s'] * 1e3:.2f}", f"{warm['second_step_s'] * 1e3:.2f}"]]
            print(f"  {wl}: build-time breakdown, trainer.report.timings, ms ({cold['tag'].split('/')[0]}):")
            print("    " + table(rows, ["stage", "cold", "warm"]).replace("\n", "\n    "))

    # ---- bars ------------------------------------------------------------------------
    print("\n== Bars (nncc against numpy by hand, medians as above) ==")
    bars = []

    def nncc_failed(wl):
        return any(not r.get("ok") for r in bench.results.get((wl, "nncc"), []))

    for wl, need in SPEED_BARS.items():
        if wl not in workloads:
            continue
        n, b = bench.median(wl, "nncc"), bench.median(wl, "numpy")
        label = f"{wl}: nncc >= {need:g}x numpy's steps/s"
        if n is None or b is None:
            bars.append([label, "nncc failed" if n is None and nncc_failed(wl) else "not measured",
                         "N/A" if b is None and "numpy" not in frameworks or "nncc" not in frameworks else "FAIL"])
            continue
        tags = {r["tag"]: r["steps_per_s"] for r in bench.results[(wl, "numpy")] if r.get("ok")}
        paired = [r["steps_per_s"] / tags[r["tag"]] for r in bench.results[(wl, "nncc")]
                  if r.get("ok") and r["tag"] in tags]
        result = verdict_fail(wl) if wrong(wl, "nncc") else ("PASS" if n / b >= need else "FAIL")
        bars.append([label, f"{n / b:.2f}x" + (f" (same-round ratios {min(paired):.2f}-{max(paired):.2f})"
                                               if len(paired) > 1 else ""), result])
    if "E1" in workloads:
        n, b = bench.median("E1", "nncc"), bench.median("E1", "numpy")
        label = f"E1: nncc's epoch time <= {E1_BAR:g}x numpy's"
        if n is None or b is None:
            bars.append([label, "nncc failed" if n is None and nncc_failed("E1") else "not measured",
                         "N/A" if b is None and "numpy" not in frameworks or "nncc" not in frameworks else "FAIL"])
        else:
            result = verdict_fail("E1") if wrong("E1", "nncc") else ("PASS" if n / b <= E1_BAR else "FAIL")
            bars.append([label, f"{n / b:.2f}x ({n:.3f} s vs {b:.3f} s)", result])
    if "W3" in workloads:
        label = f"W3: nncc's matmul GFLOP/s >= {GEMM_BAR:.0%} of numpy's 2048^3"
        if gemm_ratio is None:
            bars.append([label, "nncc failed" if nncc_failed("W3") else "not measured",
                         "N/A" if "nncc" not in frameworks else "FAIL"])
        else:
            n = bench.median("W3", "nncc") * flops / 1e9
            bars.append([label, f"{gemm_ratio:.0%} ({n:.1f} vs {n / gemm_ratio:.1f} GFLOP/s)",
                         verdict_fail("W3") if wrong("W3", "nncc") else
                         ("PASS" if gemm_ratio >= GEMM_BAR else "FAIL")])
    if "nncc" in frameworks:
        bars.append([f"W2: cold build + first step < {COLD_BAR_S:g} s",
                     f"{cold_w2 * 1e3:.1f} ms" if cold_w2 is not None else "not measured",
                     ("PASS" if cold_w2 < COLD_BAR_S else "FAIL") if cold_w2 is not None else "FAIL"])
        bars.append([f"W2: warm build + first step < {WARM_BAR_S * 1e3:g} ms",
                     f"{warm_w2 * 1e3:.1f} ms" if warm_w2 is not None else "not measured",
                     ("PASS" if warm_w2 < WARM_BAR_S else "FAIL") if warm_w2 is not None else "FAIL"])
    for bar in bars:  # a verdict from disturbed results only is not worth much
        wl = bar[0][:2]
        cells = [bench.results.get((wl, "nncc"), []), bench.results.get((wl, "numpy"), [])]
        if wl == "W3" and "GFLOP" in bar[0]:
            cells = [bench.results.get(("W3", "nncc"), []), bench.gemm]
        if "build" in bar[0]:
            cells = [[c for c, _ in bench.ttfs.get("W2", [])] if "cold" in bar[0] else
                     [w for _, w in bench.ttfs.get("W2", [])]]
        if any(recs and all(r["disturbed"] for r in recs if r.get("ok")) and any(r.get("ok") for r in recs)
               for recs in cells):
            bar[2] += " (disturbed: unreliable)"
    print(table(bars, ["bar", "measured", "result"], ["<", ">", "<"]))
    print(f"  {sum(b[2] == 'PASS' for b in bars)}/{len(bars)} bars passed")
    summary["bars"] = [dict(zip(["bar", "measured", "result"], b)) for b in bars]

    # ---- problems --------------------------------------------------------------------
    problems = [(k, v) for k, v in verdict.items() if v[0] not in ("ok",)]
    failed = [r for r in runner.records if not r.get("ok") and r["mode"] != "check"]
    if problems or failed or bench.mismatch:
        print("\n== Problems ==")
        for (wl, fw), (kind, msg, rec) in problems:
            print(f"  check {wl} {fw}: {kind}: {msg[:300]}\n    reproduce: {rec.get('cmd', '')}")
        for (wl, fw), items in bench.mismatch.items():
            print(f"  {wl} {fw}: first-step loss differs from numpy's in "
                  + ", ".join(f"{tag} (rel {rel:.1e})" for tag, rel in items))
        seen = set()
        for rec in failed:
            key = (rec["workload"], rec["framework"], rec["mode"], short_error(rec))
            count = sum(1 for r in failed if (r["workload"], r["framework"], r["mode"], short_error(r)) == key)
            if key in seen:
                continue
            seen.add(key)
            print(f"  {rec['workload']} {rec['framework']} ({rec['mode']}): {count} failed run(s): {short_error(rec)}"
                  f"\n    reproduce: {rec['cmd']}")
            for line in rec.get("traceback", "").strip().splitlines()[-8:]:
                print(f"      {line}")
    return summary
