#!/usr/bin/env python3
"""nncc speed benchmark: W1-W4 steps/s, E1 s/epoch, correctness, time to first step, W3 GEMM.

Workloads, measures and bars follow /work/shared/bench/WORKLOADS.md. Every measurement
runs in its own process (`benchmarks/workloads.py <framework> <workload> --mode ...`, which
prints one JSON line), frameworks interleaved within each round (their order rotated from
round to round), rounds repeated; tables report the median over rounds and the spread
[min-max]. The machine is shared and noisy: compare only within a run.

Noise: for every measurement the harness reads /proc/stat and its children's CPU time, so
it knows what share of the machine's CPUs *other* processes used meanwhile ("others").
Multi-threaded runtimes (OpenBLAS, torch, nncc's OpenMP) can slow down 10-100x when a
neighbour takes a core, so a result measured with others above --contention (20%) counts
as disturbed: medians use the undisturbed results when a cell has any (the cell then says
how many of its results it used, e.g. "(2/3)"), and, time allowing, workloads with a
framework that has no undisturbed result get extra rounds at the end (all frameworks
again, interleaved). Every raw result, disturbed or not, is in the --json file.

numpy's OpenBLAS is slowed down by OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: the numpy and
torch processes run without them; nncc's processes get the environment unchanged.

    python benchmarks/run.py                      # full run, 3 rounds (~5-10 min)
    python benchmarks/run.py --quick              # smoke run (~1-2 min)
    python benchmarks/run.py --workloads W2,E1 --frameworks nncc,numpy --rounds 5 --json out.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKLOADS_PY = HERE / "workloads.py"
sys.path.insert(0, str(HERE))
from workloads import w3_matmul_flops  # noqa: E402

ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "E1"]
ALL_FRAMEWORKS = ["nncc", "numpy", "torch"]
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TITLES = {"W1": "W1 tiny", "W2": "W2 mnist-small", "W3": "W3 mnist-wide", "W4": "W4 norm-dropout"}
# the bars of the issue: nncc's steps/s over numpy's at least; E1: nncc's epoch time over
# numpy's at most; W3 matmul rate over numpy's 2048^3 sgemm rate; W2 time to first step
SPEED_BARS = {"W1": 5.0, "W2": 2.0, "W3": 1.1, "W4": 1.5}
E1_BAR, GEMM_BAR, COLD_BAR_S, WARM_BAR_S = 0.45, 0.90, 1.0, 0.050
REL_TOL = 1e-5


# --------------------------------------------------------------------------------------
# Running one measurement
# --------------------------------------------------------------------------------------
def cpu_snapshot():
    """(busy CPU seconds of the whole machine, steal seconds, CPU seconds of this process
    and its finished children): what other processes took during a measurement."""
    busy = steal = 0.0
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
        busy = (user + nice + system + irq + softirq) / hz
        steal = (fields[7] if len(fields) > 7 else 0) / hz
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return busy, steal, ru.ru_utime + ru.ru_stime + me.ru_utime + me.ru_stime


class Runner:
    """Starts `workloads.py` in a new process per measurement and records every result."""

    def __init__(self, quick, contention):
        self.quick = quick
        self.contention = contention
        self.env_nncc = dict(os.environ)
        self.env_blas = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
        self.removed = {k: os.environ[k] for k in BLAS_VARS if k in os.environ}
        self.records = []

    def run(self, fw, wl, mode, env_extra=None, tag=""):
        env = dict(self.env_nncc if fw == "nncc" else self.env_blas)
        env.update(env_extra or {})
        cmd = [sys.executable, str(WORKLOADS_PY), fw, wl, "--mode", mode] + (["--quick"] if self.quick else [])
        timeout = 150 if self.quick else 300
        start = time.perf_counter()
        busy0, steal0, ours0 = cpu_snapshot()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
            result = json.loads(lines[-1]) if lines else {
                "ok": False, "error": f"exit code {proc.returncode}, no result line",
                "traceback": (proc.stderr or proc.stdout)[-3000:]}
            if proc.returncode < 0:
                result.update(ok=False, error=f"killed by signal {-proc.returncode} (exit code {proc.returncode})")
            elif proc.returncode and result.get("ok"):
                result.update(ok=False, error=f"exit code {proc.returncode}")
        except subprocess.TimeoutExpired:
            result = {"ok": False, "error": f"timed out after {timeout} s"}
        wall = time.perf_counter() - start
        busy1, steal1, ours1 = cpu_snapshot()
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity
        result.update(framework=fw, workload=wl, mode=mode, tag=tag, wall_s=wall, cmd=" ".join(cmd),
                      others_cpu=others, steal_cpu=(steal1 - steal0) / capacity,
                      disturbed=others > self.contention)
        self.records.append(result)
        return result


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


# --------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------
def phase_check(runner, workloads, frameworks):
    """Loss after step 1 and step 2 from the same init on the same batch, all frameworks;
    numpy's float32 losses are the yardstick (its float64 run is shown too)."""
    print("\n== Correctness: loss after step 1 and step 2 (same init, same batch; W4 with dropout p=0; "
          "E1: two consecutive batches, nncc through fit(shuffle=False)) ==", flush=True)
    fws = ["numpy"] + [f for f in frameworks if f != "numpy"]
    checks = {(wl, fw): runner.run(fw, wl, "check", tag="check") for wl in workloads for fw in fws}
    verdict, rows = {}, []
    for wl in workloads:
        ref = checks[(wl, "numpy")]
        ref_losses = ref.get("losses") if ref.get("ok") else None
        f64 = ref.get("losses_f64") if ref.get("ok") else None
        for fw in fws:
            rec = checks[(wl, fw)]
            if not rec.get("ok"):
                verdict[(wl, fw)] = ("ERROR", short_error(rec), rec)
                rows.append([wl, fw, "ERROR", "", "", short_error(rec)[:90]])
                continue
            losses = rec["losses"]
            if ref_losses is None:
                verdict[(wl, fw)] = ("N/A", "no numpy reference", rec)
                rows.append([wl, fw, f"{losses[0]:.7g}", f"{losses[1]:.7g}", "-", "no reference"])
                continue
            rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, ref_losses))
            ok = all(v == v and abs(v) != float("inf") for v in losses) and rel <= REL_TOL
            verdict[(wl, fw)] = ("ok" if ok else "MISMATCH", f"losses {losses} vs numpy's {ref_losses}, "
                                                            f"max rel diff {rel:.1e}", rec)
            rows.append([wl, fw, f"{losses[0]:.7g}", f"{losses[1]:.7g}", f"{rel:.1e}",
                         "ok" if ok else "MISMATCH (> 1e-5 rel): a fast wrong answer is not a result"])
        if f64 and ref_losses:
            rows.append([wl, "numpy f64", f"{f64[0]:.7g}", f"{f64[1]:.7g}",
                         f"{max(abs(a - b) / abs(b) for a, b in zip(ref_losses, f64)):.1e}",
                         "float64 reference (diff: numpy f32 from it)"])
    print(table(rows, ["workload", "framework", "loss step 1", "loss step 2", "rel diff vs numpy", "status"],
                ["<", "<", ">", ">", ">", "<"]))
    return verdict


class Bench:
    def __init__(self, runner, workloads, frameworks, args):
        self.runner, self.workloads, self.frameworks, self.args = runner, workloads, frameworks, args
        self.results = {(wl, fw): [] for wl in workloads for fw in frameworks}  # records per cell
        self.gemm, self.mm8 = [], []
        self.ttfs = {}                 # workload -> [(cold, warm)]
        self.mismatch = {}             # (wl, fw) -> [(tag, rel)]: first-step loss vs numpy in a round
        self.round_seconds = {}        # workload -> seconds its last round took
        self.extra_runs = 0            # extra workload rounds run

    def workload_round(self, wl, order, tag):
        start = time.perf_counter()
        recs = {}
        for fw in order:
            rec = self.runner.run(fw, wl, "epoch" if wl == "E1" else "speed", tag=tag)
            recs[fw] = rec
            self.results[(wl, fw)].append(rec)
            noise = f"others {rec['others_cpu']:.0%}{' DISTURBED' if rec['disturbed'] else ''}"
            if rec.get("ok") and rec.get("finite", True):
                if wl == "E1":
                    value, unit = rec["s_per_epoch"], "s/epoch"
                    extra = (f"epochs {', '.join(f'{t:.3f}' for t in rec['epochs_s'])} s, epoch loss "
                             f"{rec['epoch_losses'][-1]:.4f}")
                else:
                    value, unit = rec["steps_per_s"], "steps/s"
                    extra = (f"windows {fmt_num(min(rec['windows']))}..{fmt_num(max(rec['windows']))}, "
                             f"loss {rec['first_loss']:.4f} -> {rec['last_loss']:.4g}")
                print(f"  {wl} {fw:<6}{fmt_num(value):>9} {unit:<8} ({extra}; {rec['wall_s']:.1f} s, {noise})",
                      flush=True)
            else:
                rec["ok"] = False
                rec.setdefault("error", "non-finite loss")
                print(f"  {wl} {fw:<6} ERROR {short_error(rec)}", flush=True)
        # Same init and batch as numpy: the first step's loss must agree (not W4: dropout masks
        # differ; not E1: shuffles differ). Guards against code that changed after the check.
        ref = recs.get("numpy")
        if wl in ("W1", "W2", "W3") and ref and ref.get("ok"):
            for fw, rec in recs.items():
                if fw != "numpy" and rec.get("ok"):
                    rel = abs(rec["first_loss"] - ref["first_loss"]) / max(abs(ref["first_loss"]), 1e-12)
                    if rel > REL_TOL:
                        self.mismatch.setdefault((wl, fw), []).append((tag, rel))
                        print(f"  {wl} {fw}: first-step loss {rec['first_loss']:.7g} differs from numpy's "
                              f"{ref['first_loss']:.7g} (rel {rel:.1e}): WRONG", flush=True)
        if wl == "W3":
            g = self.runner.run("numpy", "gemm", "gemm", tag=tag)
            m = self.runner.run("numpy", "W3", "matmul8", tag=tag)
            self.gemm.append(g)
            self.mm8.append(m)
            for rec, what in ((g, "numpy 2048^3 float32 matmul"), (m, "numpy, W3's 8 matmuls alone")):
                noise = f"others {rec['others_cpu']:.0%}{' DISTURBED' if rec['disturbed'] else ''}"
                if not rec.get("ok"):
                    print(f"  {what}: ERROR {short_error(rec)}", flush=True)
                elif rec["mode"] == "gemm":
                    print(f"  {what}: {rec['gflops']:.1f} GFLOP/s (best {rec['gflops_max']:.1f}; {noise})", flush=True)
                else:
                    print(f"  {what}: {rec['steps_per_s']:.1f} steps/s = {rec['gflops']:.1f} GFLOP/s ({noise})",
                          flush=True)
        self.round_seconds[wl] = time.perf_counter() - start

    def ttfs_round(self, workloads, tag):
        """nncc cold (fresh NNCC_CACHE_DIR: compile + first step) and warm (same dir, new process)."""
        for wl in workloads:
            cache = tempfile.mkdtemp(prefix="nncc-bench-cache-")
            try:
                cold = self.runner.run("nncc", wl, "ttfs", env_extra={"NNCC_CACHE_DIR": cache}, tag=tag + "/cold")
                warm = self.runner.run("nncc", wl, "ttfs", env_extra={"NNCC_CACHE_DIR": cache}, tag=tag + "/warm")
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            self.ttfs.setdefault(wl, []).append((cold, warm))
            for kind, rec in (("cold", cold), ("warm", warm)):
                if rec.get("ok"):
                    print(f"  time to first step {wl} {kind}: compile {rec['compile_s'] * 1e3:7.1f} ms + first step "
                          f"{rec['first_step_s'] * 1e3:6.1f} ms = {rec['total_s'] * 1e3:7.1f} ms (cache "
                          f"{'hit' if rec['cache_hit'] else 'miss'}; others {rec['others_cpu']:.0%}"
                          f"{' DISTURBED' if rec['disturbed'] else ''})", flush=True)
                else:
                    print(f"  time to first step {wl} {kind}: ERROR {short_error(rec)}", flush=True)

    # -- aggregation --------------------------------------------------------------------
    def values(self, wl, fw):
        key = "s_per_epoch" if wl == "E1" else "steps_per_s"
        used, total = usable(self.results.get((wl, fw), []))
        return [r[key] for r in used], len(used), total

    def median(self, wl, fw):
        vals, _, _ = self.values(wl, fw)
        return statistics.median(vals) if vals else None

    def needs_more(self, wl):
        """A framework of this workload has results, but none undisturbed."""
        cells = [self.results[(wl, fw)] for fw in self.frameworks]
        if wl == "W3":
            cells += [self.gemm, self.mm8]
        return any(any(r.get("ok") for r in recs) and all(r["disturbed"] for r in recs if r.get("ok"))
                   for recs in cells)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="nncc speed benchmark against NumPy by hand and torch eager (WORKLOADS.md): steps/s of "
                    "W1-W4, E1 s/epoch, step-1/step-2 losses, nncc's time to first step (cold/warm cache), "
                    "W3 matmul GFLOP/s against numpy's 2048^3 sgemm, and the bars of the issue. Each "
                    "measurement runs in its own subprocess; frameworks are interleaved per round; results "
                    "are medians over rounds with the [min-max] spread.",
        epilog="numpy/torch subprocesses run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset; nncc's get the "
               "environment unchanged. One measurement alone: python benchmarks/workloads.py --help")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                    help="comma-separated subset of W1,W2,W3,W4,E1 (default: all)")
    ap.add_argument("--frameworks", default=",".join(ALL_FRAMEWORKS),
                    help="comma-separated subset of nncc,numpy,torch (default: all; torch skipped if not importable)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of interleaved measurements (default 3; 1 "
                                                              "with --quick)")
    ap.add_argument("--quick", action="store_true", help="fast smoke run: 1 round, short windows, "
                                                          "time to first step for W2 only, no extra rounds")
    ap.add_argument("--json", metavar="OUT", help="write every raw result and the summary to this file")
    ap.add_argument("--skip-check", action="store_true", help="skip the step-1/step-2 loss check")
    ap.add_argument("--contention", type=float, default=0.2, metavar="SHARE",
                    help="a measurement during which other processes used more than this share of all CPUs "
                         "counts as disturbed (default 0.2)")
    ap.add_argument("--extra-rounds", type=int, default=None, metavar="N",
                    help="at most N extra rounds per workload that has a framework with only disturbed results "
                         "(default 2; 0 with --quick)")
    ap.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                    help="start no extra round that would end after this many seconds (default 540)")
    args = ap.parse_args(argv)

    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    frameworks = [f.strip().lower() for f in args.frameworks.split(",") if f.strip()]
    bad = [w for w in workloads if w not in ALL_WORKLOADS] + [f for f in frameworks if f not in ALL_FRAMEWORKS]
    if bad:
        ap.error(f"unknown workload(s)/framework(s): {bad}")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        ap.error("--rounds must be >= 1")
    extra_rounds = args.extra_rounds if args.extra_rounds is not None else (0 if args.quick else 2)
    budget = args.budget if args.budget is not None else 540.0
    unavailable = [f for f in frameworks if f != "numpy" and importlib.util.find_spec(f) is None]
    frameworks = [f for f in frameworks if f not in unavailable]

    t_start = time.perf_counter()
    runner = Runner(args.quick, args.contention)
    import numpy

    print("nncc benchmark: python benchmarks/run.py", " ".join(sys.argv[1:] if argv is None else argv))
    print(f"  python {platform.python_version()}, numpy {numpy.__version__}"
          + (f", torch {__import__('torch').__version__}" if "torch" in frameworks else "")
          + f", {os.cpu_count()} CPUs ({platform.machine()}), {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  workloads {','.join(workloads)}; frameworks {','.join(frameworks)}"
          + (f" (not importable, skipped: {','.join(unavailable)})" if unavailable else "")
          + f"; {rounds} round(s){' (quick)' if args.quick else ''}, up to {extra_rounds} extra")
    if runner.removed:
        print("  numpy/torch subprocesses run with " + ", ".join(f"{k}={v}" for k, v in runner.removed.items())
              + " UNSET (they slow OpenBLAS); nncc subprocesses get the environment unchanged")
    else:
        print(f"  {' and '.join(BLAS_VARS)} are not set here (numpy/torch subprocesses would get them unset, "
              "nncc the environment unchanged)")
    print(f"  'others': share of all CPUs other processes used during a measurement; above {args.contention:.0%} "
          "it is DISTURBED and left out of medians when undisturbed results exist")
    if "nncc" in frameworks:
        try:
            where = subprocess.run([sys.executable, "-c", "import nncc; print(nncc.__version__, nncc.__file__)"],
                                   capture_output=True, text=True, env=runner.env_nncc, cwd=ROOT, timeout=60)
            version, _, path = where.stdout.strip().partition(" ")
            head = subprocess.run(["git", "-C", str(Path(path or ".").resolve().parent.parent), "rev-parse",
                                   "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
            print(f"  nncc {version} from {path or '?'}" + (f" (git HEAD {head})" if head else "")
                  + ("" if where.returncode == 0 else f" -- import failed: {where.stderr.strip()[-200:]}"))
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"  nncc: could not be located ({exc})")

    verdict = {} if args.skip_check else phase_check(runner, workloads, frameworks)

    bench = Bench(runner, workloads, frameworks, args)
    ttfs_workloads = ["W2"] if args.quick else [w for w in ("W1", "W2", "W3", "W4") if w in workloads or w == "W2"]
    for r in range(rounds):
        print(f"\n== Round {r + 1}/{rounds} ==", flush=True)
        k = r % len(frameworks) if frameworks else 0
        order = frameworks[k:] + frameworks[:k]
        for wl in workloads:
            bench.workload_round(wl, order, f"round{r + 1}")
        if "nncc" in frameworks and (r == 0 or not args.quick):
            bench.ttfs_round(ttfs_workloads, f"round{r + 1}")

    # extra rounds for workloads whose results were all disturbed for some framework
    for e in range(extra_rounds):
        todo = [wl for wl in workloads if bench.needs_more(wl)]
        w2 = bench.ttfs.get("W2", [])
        if w2 and all(c["disturbed"] or w["disturbed"] for c, w in w2):
            todo.append("ttfs")
        if not todo:
            break
        print(f"\n== Extra round {e + 1}: {', '.join(todo)} (only disturbed results so far) ==", flush=True)
        k = (rounds + e) % len(frameworks) if frameworks else 0
        order = frameworks[k:] + frameworks[:k]
        for wl in todo:
            estimate = bench.round_seconds.get(wl, 10.0)
            if time.perf_counter() - t_start + estimate > budget:
                print(f"  {wl}: skipped, would end past the {budget:.0f} s budget", flush=True)
                continue
            if wl == "ttfs":
                bench.ttfs_round(["W2"], f"extra{e + 1}")
            else:
                bench.workload_round(wl, order, f"extra{e + 1}")
                bench.extra_runs += 1

    summary = report(bench, verdict, runner, args, rounds)
    wrong_or_failed = any(v[0] in ("MISMATCH", "ERROR") for v in verdict.values()) or bench.mismatch or any(
        not r.get("ok") for r in runner.records)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        out = {"argv": sys.argv[1:] if argv is None else argv, "rounds": rounds, "frameworks": frameworks,
               "workloads": workloads, "openblas_vars_unset_for_baselines": runner.removed,
               "contention_threshold": args.contention, "summary": summary, "records": runner.records}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    return 1 if wrong_or_failed else 0  # failed bars alone are results, not errors


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


if __name__ == "__main__":
    sys.exit(main())
