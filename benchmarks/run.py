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

    python benchmarks/run.py                      # full run, 5 rounds (~6-12 min)
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
from core_distance import round_trip_ns  # noqa: E402
from report import fmt_num, report, short_error, table, usable  # noqa: E402

ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "E1"]
ALL_FRAMEWORKS = ["nncc", "numpy", "torch"]
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
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
        cores_before = round_trip_ns()
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
        cores_after = round_trip_ns()
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity
        result.update(framework=fw, workload=wl, mode=mode, tag=tag, wall_s=wall, cmd=" ".join(cmd),
                      others_cpu=others, steal_cpu=(steal1 - steal0) / capacity,
                      disturbed=others > self.contention, core_round_trip_ns=[cores_before, cores_after])
        self.records.append(result)
        return result


def conditions(rec):
    """What else went on during a measurement: the share of the CPUs other processes used,
    and how far apart the cores were before and after it (core_distance.py)."""
    cores = "/".join("?" if ns is None else f"{ns:.0f}" for ns in rec.get("core_round_trip_ns", ()))
    return f"others {rec['others_cpu']:.0%}{' DISTURBED' if rec['disturbed'] else ''}, cores {cores} ns"


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
            noise = conditions(rec)
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
                noise = conditions(rec)
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
                          f"{'hit' if rec['cache_hit'] else 'miss'}; {conditions(rec)})", flush=True)
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
    ap.add_argument("--rounds", type=int, default=None, help="rounds of interleaved measurements (default 5: this "
                                                              "machine's speed flips for seconds at a time, and a median "
                                                              "of 3 was decided by two unlucky rounds; 1 with --quick)")
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
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
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
    print("  'cores': a cache line's round trip between two CPUs before/after a measurement (core_distance.py; "
          "~50 ns: near, ~300 ns: far apart, where two-thread code loses up to half its speed)")
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


if __name__ == "__main__":
    sys.exit(main())
