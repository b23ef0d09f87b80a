#!/usr/bin/env python3
"""Paired A/B of the C that two revisions of nncc generate for one workload, in one process.

    python benchmarks/ab.py W2 --base HEAD~1              # HEAD~1 against the working tree
    python benchmarks/ab.py E1 --base main --head my-branch --pairs 20
    python benchmarks/ab.py W1 --base HEAD --keep /tmp/ab       # then edit /tmp/ab/base.c ...
    python benchmarks/ab.py W1 --base HEAD --variant /tmp/ab/base.c   # ... and time the edit

On this kind of machine (a shared 2-vCPU VM) a step's time drifts by 5-30 % within a minute,
and whole runs of run.py disagree with each other by more than most changes are worth.
Here each side's model is emitted by its own checkout (a detached `git worktree`, or the
working tree), both are compiled with the same flags (the GEMM compiled in) and loaded side
by side, and short windows of train steps (E1: whole epochs) alternate A B B A ..., so that
both sides see the same machine state. The result is the median of the per-pair ratios
head/base with its quartiles. The base also runs a second time, as a separately built copy
(A/A): its ratio is the floor of this method on the machine at the time (code placement
alone moved W1 by 1-3 %), and a change is called faster or slower only when its quartiles
clear the A/A quartiles.

Before timing, both sides train 3 steps from the same initial weights and their losses are
compared bit for bit (an optimisation that changes the numbers is reported).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

# Run inside a checkout: emit the workload's model with that checkout's nncc. The package's
# subpackages live beside nncc/ (pyproject's package-dir), and an editable install of another
# checkout would supply them (its finder answers for nncc.compiler and the rest): so nncc is
# loaded with the checkout's root on its own search path, which is searched first.
EMIT = """
import importlib.util, sys, numpy as np
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
spec = importlib.util.spec_from_file_location("nncc", {root!r} + "/nncc/__init__.py",
                                              submodule_search_locations=[{root!r} + "/nncc", {root!r}])
sys.modules["nncc"] = nncc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nncc)
import nncc.compiler, nncc.runtime, nncc.templates, workloads
for module in (nncc, nncc.compiler, nncc.runtime, nncc.templates):
    assert module.__file__.startswith({root!r}), module.__file__
model = workloads.NnccModel({wl!r}, workloads.init_params({wl!r}))
t = model.trainer
open({out!r} + ".c", "w").write(t.source)
open({out!r} + ".h", "w").write(t.header)
np.save({out!r} + ".npy", t.arena)
"""


def emit(root: Path, workload: str, out: Path) -> None:
    """The workload's model as `root`'s nncc emits it (E1 is W2's model, WORKLOADS.md)."""
    code = EMIT.format(root=str(root), wl="W2" if workload == "E1" else workload, out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


def checkout(rev: str, path: Path) -> Path:
    """A detached worktree of `rev` at `path` (the caller removes it)."""
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], check=True, cwd=ROOT)
    return path


class Side:
    """One side's model: compiled, loaded, with its own arena and runtime state."""

    def __init__(self, label: str, source: Path, header: Path, arena: np.ndarray, lr: float):
        import cffi

        from nncc.runtime.build import COMPILE_FLAGS, LINK_FLAGS, compiler_command, toolchain_flags
        from nncc.runtime.trainer import _aligned_floats

        self.label = label
        text = source.read_text()
        include = re.search(r'#include "([^"]+)"', text).group(1)
        (source.parent / include).write_text(header.read_text())
        lib_path = source.with_suffix(".so")
        cc = tuple(compiler_command())  # as nncc builds, but one translation unit (the GEMM inside)
        subprocess.run([*cc, *toolchain_flags(cc, COMPILE_FLAGS), *toolchain_flags(cc, LINK_FLAGS),
                        f"-I{source.parent}", str(source), "-o", str(lib_path), "-lm"], check=True)
        self.ffi = cffi.FFI()
        self.ffi.cdef(re.sub(r"(?m)^#.*$", "", header.read_text()))
        self.lib = self.ffi.dlopen(str(lib_path))
        self.arena = _aligned_floats(max(arena.size, self.lib.nncc_arena_floats()))  # as the Trainer's
        self.arena[:arena.size] = arena
        self.arena_ptr = self.ffi.cast("float *", self.arena.ctypes.data)
        self.rt = self.ffi.new("nncc_runtime *")
        self.rt.lr = lr

    def pointer(self, array):
        return self.ffi.cast("int32_t *" if array.dtype == np.int32 else "float *", array.ctypes.data)

    def steps(self, count, x, y) -> float:
        xp, yp = self.pointer(x), self.pointer(y)
        for _ in range(count):
            if self.lib.nncc_train_step(self.rt, self.arena_ptr, x.shape[0], xp, yp):
                raise RuntimeError(f"{self.label}: train step failed")
        return float(self.rt.loss)

    def epoch(self, x, y, batch, order) -> float:
        loss_sum = self.ffi.new("double *")
        code = self.lib.nncc_fit_epoch(self.rt, self.arena_ptr, x.shape[0], self.pointer(x), self.pointer(y), batch,
                                       1, 1, self.ffi.cast("int64_t *", order.ctypes.data), self.ffi.NULL, loss_sum)
        if code:
            raise RuntimeError(f"{self.label}: epoch failed")
        return loss_sum[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=["W1", "W2", "W3", "W4", "E1"])
    ap.add_argument("--base", required=True, help="git revision of side A")
    ap.add_argument("--head", default=None, help="git revision of side B (default: the working tree)")
    ap.add_argument("--variant", action="append", default=[], metavar="FILE.c",
                    help="also time this C file, a hand-edited copy of the base's model (see --keep); repeatable")
    ap.add_argument("--keep", metavar="DIR", help="copy each side's generated C and header into DIR")
    ap.add_argument("--pairs", type=int, default=30, help="pairs of windows (default 30)")
    ap.add_argument("--window", type=float, default=0.05, help="seconds per window (default 0.05; E1: one epoch)")
    ap.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01, as the benchmark)")
    args = ap.parse_args(argv)
    if args.pairs < 4:
        ap.error("--pairs: at least 4 (the verdict compares quartiles)")

    import workloads

    from nncc.runtime.build import pin_openmp_runtime

    with tempfile.TemporaryDirectory(prefix="nncc-ab-") as tmp_name:
        tmp = Path(tmp_name)
        worktrees = []
        try:
            sides = []
            for label, rev in (("base", args.base), ("head", args.head)):
                root = ROOT if rev is None else checkout(rev, tmp / f"{label}-tree")
                if rev is not None:
                    worktrees.append(root)
                out = tmp / label / "model"
                out.parent.mkdir()
                emit(root, args.workload, out)
                sides.append((f"{label} ({rev or 'working tree'})", out.with_suffix(".c"), out.with_suffix(".h"),
                              np.load(out.with_suffix(".npy"))))
            again = tmp / "again" / "model.c"  # the base once more: the A/A floor
            again.parent.mkdir()
            again.write_text(sides[0][1].read_text())
            sides.insert(1, ("base again (A/A: the noise floor)", again, sides[0][2], sides[0][3]))
            for k, path in enumerate(args.variant):
                out = tmp / f"variant{k}" / "model.c"
                out.parent.mkdir()
                out.write_text(Path(path).read_text())
                sides.append((path, out, sides[0][2], sides[0][3]))
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                for label, c, h, _ in sides[:1] + sides[2:3]:
                    name = label.split()[0]
                    (keep / f"{name}.c").write_text(c.read_text())
                    (keep / f"{name}.h").write_text(h.read_text())
                print(f"kept base.c/.h and head.c/.h in {keep}")
            loaded = [Side(label, c, h, arena, args.lr) for label, c, h, arena in sides]
        finally:
            for path in worktrees:
                subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
        pin_openmp_runtime()
        return measure(loaded, args, workloads)


def measure(sides, args, workloads) -> int:
    epoch = args.workload == "E1"
    if epoch:
        x, y = workloads.make_data("E1", rows=workloads.E1_ROWS)
        order = np.empty(x.shape[0], np.int64)
    else:
        x, y = workloads.make_data(args.workload)
    first = [side.steps(3, x[:64], y[:64]) if epoch else side.steps(3, x, y) for side in sides]
    for side, loss in zip(sides[2:], first[2:]):
        same = np.float32(loss).view(np.uint32) == np.float32(first[0]).view(np.uint32)
        print(f"loss after 3 steps: {side.label} {loss!r} vs base {first[0]!r}: "
              f"{'bitwise equal' if same else 'DIFFERENT'}")

    def window(side, count):
        start = time.perf_counter()
        if epoch:
            side.epoch(x, y, workloads.E1_BATCH, order)
        else:
            side.steps(count, x, y)
        return time.perf_counter() - start

    counts = []
    for side in sides:  # warm up, then size the windows
        window(side, 50)
        per_step = window(side, 50) / 50
        counts.append(1 if epoch else max(1, int(args.window / per_step)))
    per_unit = np.zeros((args.pairs, len(sides)))
    for p in range(args.pairs):
        order_of_sides = range(len(sides)) if p % 2 == 0 else reversed(range(len(sides)))
        for k in order_of_sides:
            per_unit[p, k] = window(sides[k], counts[k]) / (1 if epoch else counts[k])
    unit, scale = ("ms/epoch", 1e3) if epoch else ("us/step", 1e6)
    print(f"{args.workload}: {args.pairs} pairs of windows ({'one epoch' if epoch else f'~{args.window} s'} each)")
    ratios = per_unit / per_unit[:, :1]
    floor = np.quantile(ratios[:, 1], [0.25, 0.75])
    for k, side in enumerate(sides):
        t = per_unit[:, k] * scale
        line = f"  {side.label:40} median {np.median(t):9.2f} {unit}  [min {t.min():.2f}]"
        if k:
            q1, med, q3 = np.quantile(ratios[:, k], [0.25, 0.5, 0.75])
            line += f"  ratio to base {med:.3f} [q25 {q1:.3f}, q75 {q3:.3f}]"
            if k > 1:  # clear only when its quartiles and the A/A quartiles do not overlap
                line += ": faster" if q3 < floor[0] else ": slower" if q1 > floor[1] else ": within the A/A floor"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
