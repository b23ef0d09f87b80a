#!/usr/bin/env python3
"""Benchmark nncc's float32 GEMM kernel (templates/kernels/gemm*.c.j2) against
numpy's matmul in the same process.

The kernel is built as nncc builds it for every model (runtime/build.py: its
parts, with nncc's flags), linked with a tiny exported wrapper and loaded with
cffi in ABI mode.

Usage (numpy's OpenBLAS is slowed down by OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE,
so unset them for a fair comparison):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_bench.py

Each shape is timed in several rounds, alternating nncc and numpy; a round
runs one side for at least --min-time seconds after a warm-up, and the table
reports the median round of each side.  The machine may be shared: a round
during which other processes used more than 5 % of the CPUs is re-run (up to
--tries times; the last column counts rounds that never got a quiet slot).
Afterwards the script checks that results are bitwise identical with 1 and 2
OpenMP threads (exit status 1 if not).
"""
import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import cffi
import numpy as np


CDEF = """
void bench_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                 const float *A, int64_t lda, const float *B, int64_t ldb,
                 float beta, float *C, int64_t ldc);
void bench_set_threads(int n);
"""

WRAPPER = """
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#define NNCC_GEMM_LINKAGE __attribute__((visibility("hidden")))
#define NNCC_COMPILE_GEMM 0
%s
#ifdef _OPENMP
#include <omp.h>
#endif
void bench_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                 const float *A, int64_t lda, const float *B, int64_t ldb,
                 float beta, float *C, int64_t ldc)
{
    nncc_sgemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
void bench_set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
"""

# (M, N, K, trans) : 1024^3 and the forward/backward matmuls of an MLP
# 784 -> 1024 -> 1024 -> 10 at batch 256.
SHAPES = [
    (1024, 1024, 1024, "NN"),
    (256, 1024, 784, "NN"),
    (256, 1024, 1024, "NN"),
    (256, 10, 1024, "NN"),
    (256, 1024, 1024, "NT"),
    (256, 784, 1024, "NT"),
    (1024, 1024, 256, "TN"),
    (784, 1024, 256, "TN"),
    (1024, 10, 256, "TN"),
    (256, 1024, 10, "NT"),
]

# The GEMM calls of one train step of the small workloads (benchmarks/workloads.py):
# --shapes w1 / w2.  Tiny calls are dominated by per-call overhead (and cffi's).
W1_SHAPES = [
    (32, 64, 1, "NN"), (32, 64, 64, "NN"), (32, 1, 64, "NN"), (32, 64, 1, "NT"),
    (64, 1, 32, "TN"), (32, 64, 64, "NT"), (64, 64, 32, "TN"), (1, 64, 32, "TN"),
]
W2_SHAPES = [
    (64, 128, 784, "NN"), (64, 10, 128, "NN"), (128, 10, 64, "TN"), (64, 128, 10, "NT"),
    (784, 128, 64, "TN"),
]
# W4's big five (784 -> 512 -> 512 -> 10 at batch 128): forward, input gradient, updates.
W4_SHAPES = [
    (128, 512, 784, "NN"), (128, 512, 512, "NN"), (128, 512, 512, "NT"), (784, 512, 128, "TN"),
    (512, 512, 128, "TN"),
]
SHAPE_SETS = {"default": SHAPES, "w1": W1_SHAPES, "w2": W2_SHAPES, "w4": W4_SHAPES}


def build(workdir):
    from nncc.runtime.build import (COMPILE_FLAGS, GEMM_PARTS, LINK_FLAGS, compiler_command, gemm_source, gemm_text,
                                    pin_openmp_runtime, toolchain_flags)

    workdir = pathlib.Path(workdir)
    cc = compiler_command()
    compile_flags, link_flags = toolchain_flags(tuple(cc), COMPILE_FLAGS), toolchain_flags(tuple(cc), LINK_FLAGS)
    objects = []
    for part in GEMM_PARTS:
        (workdir / f"gemm{part}.c").write_text(gemm_source(part))
        objects.append(workdir / f"gemm{part}.o")
        subprocess.run([*cc, *compile_flags, "-c", str(workdir / f"gemm{part}.c"), "-o", str(objects[-1])],
                       check=True)
    src = workdir / "gemm_bench.c"
    lib = workdir / "libgemm_bench.so"
    src.write_text(WRAPPER % gemm_text())  # the GEMM's declarations only
    subprocess.run([*cc, *compile_flags, *link_flags, str(src), *map(str, objects), "-o", str(lib)], check=True)
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    handle = ffi.dlopen(str(lib))
    pin_openmp_runtime()
    return ffi, handle


def operands(M, N, K, trans, rng):
    ta, tb = trans[0] == "T", trans[1] == "T"
    A = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    B = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    return ta, tb, A, B


def make_nncc_call(ffi, lib, M, N, K, ta, tb, A, B, C):
    fp = lambda a: ffi.cast("float *", a.ctypes.data)
    pa, pb, pc = fp(A), fp(B), fp(C)
    lda, ldb, ldc = A.shape[1], B.shape[1], C.shape[1]
    f = lib.bench_sgemm
    return lambda: f(int(ta), int(tb), M, N, K, pa, lda, pb, ldb, 0.0, pc, ldc)


def cpu_seconds():
    """(CPU seconds used by all processes, by this process) so far.

    On a shared machine the difference tells how much of a round's CPU time
    went to other processes.  Falls back to (0, 0) where /proc is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    r = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), r.ru_utime + r.ru_stime


def time_round(fn, min_time):
    """Seconds per call (warm up, then run for at least min_time), the
    round's wall time, and the CPU seconds other processes used meanwhile."""
    # Let the other library's idle worker threads stop spinning first
    # (OpenBLAS workers busy-wait ~0.1 s after a call, libgomp's briefly);
    # otherwise they steal one of the two cores from whoever runs next.
    time.sleep(0.2)
    fn()
    fn()
    n = 1
    while True:
        busy0, own0 = cpu_seconds()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        busy1, own1 = cpu_seconds()
        if dt >= min_time:
            return dt / n, dt, max(0.0, (busy1 - busy0) - (own1 - own0))
        n = max(n * 2, int(n * min_time / max(dt, 1e-9) * 1.1) + 1)


def clean_round(fn, min_time, tries):
    """time_round, retried while other processes took more than 5 % of the
    machine's CPU time during the round (the machine is shared, and a busy
    core can slow a 2-thread GEMM many times over).  /proc/stat counts in
    clock ticks, hence the small absolute slack.  Returns (seconds per call,
    whether the round was clean)."""
    for _ in range(tries):
        t, wall, others = time_round(fn, min_time)
        if others <= 0.03 + 0.05 * wall * (os.cpu_count() or 1):
            return t, True
    return t, False


def bench(ffi, lib, rounds, min_time, tries, shapes=SHAPES):
    rng = np.random.default_rng(0)
    print(f"{'M':>5} {'N':>5} {'K':>5} {'op':>3} {'nncc GF/s':>10} {'numpy GF/s':>11} {'ratio':>6}"
          f"  noisy rounds")
    ratios = []
    for M, N, K, trans in shapes:
        ta, tb, A, B = operands(M, N, K, trans, rng)
        opA = A.T if ta else A
        opB = B.T if tb else B
        C = np.empty((M, N), np.float32)
        Cn = np.empty((M, N), np.float32)
        ours = make_nncc_call(ffi, lib, M, N, K, ta, tb, A, B, C)
        theirs = lambda: np.matmul(opA, opB, out=Cn)
        t_ours, t_np, noisy = [], [], 0
        # Alternate the two sides round by round so slow phases of a noisy
        # machine hit both; each round re-warms its side.
        for _ in range(rounds):
            for side, fn in ((t_ours, ours), (t_np, theirs)):
                t, clean = clean_round(fn, min_time, tries)
                side.append(t)
                noisy += not clean
        flop = 2.0 * M * N * K
        g_ours = flop / np.median(t_ours) / 1e9
        g_np = flop / np.median(t_np) / 1e9
        ratios.append(g_ours / g_np)
        err = np.max(np.abs(C - Cn)) / max(1e-30, np.max(np.abs(Cn)))
        assert err < 1e-4, (M, N, K, trans, err)
        print(f"{M:5d} {N:5d} {K:5d} {trans:>3} {g_ours:10.1f} {g_np:11.1f} {g_ours / g_np:6.2f}"
              f"  {noisy}/{2 * rounds}", flush=True)
    print(f"min ratio {min(ratios):.2f}, geomean {np.exp(np.mean(np.log(ratios))):.2f}")


def thread_check(ffi, lib):
    """Results must be bitwise identical for 1 and 2 OpenMP threads."""
    rng = np.random.default_rng(1)
    ok = True
    cases = SHAPES + W1_SHAPES + W2_SHAPES + [(333, 517, 1201, "NN"), (129, 77, 900, "TT"), (1000, 40, 300, "NT")]
    for M, N, K, trans in cases:
        ta, tb, A, B = operands(M, N, K, trans, rng)
        outs = []
        for nt in (1, 2):
            lib.bench_set_threads(nt)
            C = np.full((M, N), np.nan, np.float32)
            make_nncc_call(ffi, lib, M, N, K, ta, tb, A, B, C)()
            outs.append(C)
        same = np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
        ok &= same
        print(f"  {M:5d} {N:5d} {K:5d} {trans:>3}: {'bitwise equal' if same else 'DIFFERENT'}")
    lib.bench_set_threads(os.cpu_count() or 1)
    print("thread-count independence (OMP 1 vs 2 threads):", "OK" if ok else "FAILED")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--tries", type=int, default=8,
                    help="re-runs of a round disturbed by other processes")
    ap.add_argument("--shapes", choices=sorted(SHAPE_SETS), default="default",
                    help="shape set: default (W3 and 1024^3), or the GEMMs of a W1 / W2 train step, or W4's big five")
    args = ap.parse_args()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var} is set; numpy may be slower than it can be", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        ffi, lib = build(d)
        print(f"cores: {os.cpu_count()}, numpy {np.__version__}")
        bench(ffi, lib, args.rounds, args.min_time, args.tries, SHAPE_SETS[args.shapes])
        ok = thread_check(ffi, lib)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
