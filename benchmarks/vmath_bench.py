#!/usr/bin/env python3
"""Benchmark nncc's vectorisable float32 math (templates/kernels/vmath.c.j2) against
libm's scalar functions in the same C harness.

The library is pasted into a tiny C file and built with the flags nncc uses for
generated modules (-O3 -march=native, no -ffast-math).  For each function, a loop
    for (i = 0; i < n; i++) y[i] = f(x[i]);
over n = 4096 elements (in cache) is run repeatedly inside C (timed with
clock_gettime, so no Python call overhead), and the best of several rounds is
reported in ns per element.  libm's loops are not vectorised (GCC cannot vectorise
calls to expf/tanhf/logf without -ffast-math); nncc's are.

    python benchmarks/vmath_bench.py [--n 4096] [--rounds 7]
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import cffi
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
VMATH = ROOT / "templates" / "kernels" / "vmath.c.j2"
CFLAGS = ["-O3", "-march=native", "-std=gnu99", "-fPIC", "-shared", "-fopenmp"]

# (name, C expression of float v, input distribution)
CASES = [
    ("nncc_expf", "nncc_expf(v)", "sym"),
    ("expf", "expf(v)", "sym"),
    ("nncc_tanhf", "nncc_tanhf(v)", "sym"),
    ("tanhf", "tanhf(v)", "sym"),
    ("nncc_sigmoidf", "nncc_sigmoidf(v)", "sym"),
    ("1/(1+expf(-x))", "1.0f / (1.0f + expf(-v))", "sym"),
    ("nncc_logf", "nncc_logf(v)", "pos"),
    ("logf", "logf(v)", "pos"),
    ("nncc_log1pf", "nncc_log1pf(v)", "pos"),
    ("log1pf", "log1pf(v)", "pos"),
]

HARNESS_HEAD = """
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <time.h>
/*VMATH*/
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}
"""
# One noinline loop per case, plus a timing driver that calls it `reps` times.
CASE_TEMPLATE = """
__attribute__((noinline)) static void loop_%(i)d(const float *restrict x, float *restrict y, long n)
{ for (long i = 0; i < n; i++) { float v = x[i]; y[i] = %(expr)s; } }
double bench_%(i)d(const float *x, float *y, long n, long reps)
{
    double t0 = now_ns();
    for (long r = 0; r < reps; r++) {
        loop_%(i)d(x, y, n);
        __asm__ volatile("" : : "r"(y) : "memory");
    }
    return (now_ns() - t0) / ((double)reps * n);
}
"""


def build(tmp):
    src = HARNESS_HEAD.replace("/*VMATH*/", VMATH.read_text())
    for i, (_, expr, _) in enumerate(CASES):
        src += CASE_TEMPLATE % {"i": i, "expr": expr}
    c, so = pathlib.Path(tmp) / "vmath_bench.c", pathlib.Path(tmp) / "vmath_bench.so"
    c.write_text(src)
    subprocess.run(["gcc", *CFLAGS, str(c), "-o", str(so), "-lm"], check=True)
    ffi = cffi.FFI()
    ffi.cdef("".join(f"double bench_{i}(const float *, float *, long, long);\n"
                     for i in range(len(CASES))))
    return ffi, ffi.dlopen(str(so))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="elements per loop (default 4096)")
    ap.add_argument("--rounds", type=int, default=7, help="timing rounds, best is kept")
    ap.add_argument("--min-elems", type=float, default=2e7, help="elements per round")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    inputs = {
        "sym": rng.uniform(-10.0, 10.0, args.n).astype(np.float32),
        "pos": np.exp(rng.uniform(-10.0, 10.0, args.n)).astype(np.float32),
    }
    y = np.empty(args.n, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        ffi, lib = build(tmp)
        reps = max(1, int(args.min_elems // args.n))
        py = ffi.cast("float *", y.ctypes.data)
        results = {}
        for i, (name, _, dist) in enumerate(CASES):
            px = ffi.cast("float *", inputs[dist].ctypes.data)
            fn = getattr(lib, f"bench_{i}")
            fn(px, py, args.n, max(1, reps // 10))            # warm-up
            results[name] = min(fn(px, py, args.n, reps) for _ in range(args.rounds))
    print(f"float32 elementwise loops, n = {args.n}, best of {args.rounds} rounds, 1 thread")
    print(f"{'function':<18}{'ns/elem':>10}{'vs libm':>10}")
    for k in range(0, len(CASES), 2):
        ours, theirs = CASES[k][0], CASES[k + 1][0]
        print(f"{ours:<18}{results[ours]:>10.3f}{results[theirs] / results[ours]:>9.1f}x")
        print(f"{theirs:<18}{results[theirs]:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
