"""The GEMM test harness: the kernel pasted into a small C file with exported wrappers,
built with nncc's flags (as the compiler takes them) and called through cffi (ABI mode),
or, as nncc builds it, compiled in parts (runtime/build.py) that the wrappers link
against; and the checks the GEMM tests share."""
import subprocess

import cffi
import numpy as np

from nncc.runtime.build import COMPILE_FLAGS, gemm_text, pin_openmp_runtime, toolchain_flags


WRAPPER = """
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
%s
#ifdef _OPENMP
#include <omp.h>
#endif
void t_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{ nncc_sgemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc); }
/* Test epilogue: C <- 2 C + 1 and count the visits of every element of C. */
struct t_epilogue_args { float *C; int64_t ldc; int32_t *visits; };
static void t_epilogue(const void *args, int64_t row0, int64_t rows, int64_t col0, int64_t cols)
{
    const struct t_epilogue_args *e = args;
    for (int64_t i = row0; i < row0 + rows; i++)
        for (int64_t j = col0; j < col0 + cols; j++) {
            e->C[i * e->ldc + j] = 2.0f * e->C[i * e->ldc + j] + 1.0f;
            e->visits[i * e->ldc + j] += 1;
        }
}
void t_sgemm_epilogue(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, int32_t *visits)
{
    const struct t_epilogue_args args = {C, ldc, visits};
    nncc_sgemm_epilogue(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, t_epilogue, &args);
}
void t_sgemm_update(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float alpha, float *C, int64_t ldc)
{ nncc_sgemm_update(ta, tb, M, N, K, A, lda, B, ldb, alpha, C, ldc); }
void t_set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}
int t_get_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
"""
CDEF = """
void t_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void t_sgemm_epilogue(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, int32_t *visits);
void t_sgemm_update(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float alpha, float *C, int64_t ldc);
void t_set_threads(int n);
int t_get_threads(void);
"""


def build(d, march="-march=native", split=False, compiler="gcc"):
    """The kernel in one translation unit with the wrappers, or (split) in the parts that
    runtime/build.py compiles for every model, the wrappers seeing only its declarations."""
    text = gemm_text()
    assert "{{" not in text and "{%" not in text and "{#" not in text
    # nncc's own flags (as the compiler takes them), for this -march, with every warning an error
    flags = [march if f == "-march=native" else f for f in toolchain_flags((compiler,), COMPILE_FLAGS)] + ["-Werror"]
    objects = []
    if split:
        from nncc.runtime.build import GEMM_PARTS, gemm_source

        for part in GEMM_PARTS:
            (d / f"gemm{part}.c").write_text(gemm_source(part))
            objects.append(str(d / f"gemm{part}.o"))
            subprocess.run([compiler, *flags, "-c", str(d / f"gemm{part}.c"), "-o", objects[-1]], check=True)
        text = '#define NNCC_GEMM_LINKAGE __attribute__((visibility("hidden")))\n#define NNCC_COMPILE_GEMM 0\n' + text
    (d / "g.c").write_text(WRAPPER % text)
    subprocess.run([compiler, *flags, "-shared", str(d / "g.c"), *objects, "-o", str(d / "g.so")], check=True)
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(str(d / "g.so"))
    pin_openmp_runtime()  # cffi dlclose()s the module at exit, under the runtime's idle threads
    return ffi, lib


def padded(rng, rows, cols, pad):
    """A rows x cols float32 view into a buffer with leading dimension cols+pad."""
    buf = rng.standard_normal((max(rows, 1), cols + pad), dtype=np.float32)
    return buf, buf[:rows, :cols]


def call(gemm, ta, tb, A, lda, B, ldb, beta, C, ldc, M, N, K):
    ffi, lib = gemm
    p = lambda a: ffi.cast("float *", a.ctypes.data)
    lib.t_sgemm(ta, tb, M, N, K, p(A), lda, p(B), ldb, beta, p(C), ldc)


def check(gemm, rng, M, N, K, ta, tb, beta, pad=0):
    abuf, a = padded(rng, K if ta else M, M if ta else K, pad)
    bbuf, b = padded(rng, N if tb else K, K if tb else N, pad)
    cbuf = rng.standard_normal((max(M, 1), N + pad), dtype=np.float32)
    c0 = cbuf[:M, :N].copy()
    if beta == 0.0:
        cbuf[:M, :N] = np.nan  # must be ignored, not multiplied by zero
    before = cbuf.copy()
    call(gemm, ta, tb, abuf, abuf.shape[1], bbuf, bbuf.shape[1], beta, cbuf, cbuf.shape[1], M, N, K)

    opa = (a.T if ta else a).astype(np.float64)
    opb = (b.T if tb else b).astype(np.float64)
    ref = opa @ opb + (beta * c0.astype(np.float64) if beta else 0.0)
    # Error bound for float32 accumulation: each element is a chain of K fused
    # multiply-adds (one rounding each), plus one rounding per K block when the
    # block's partial sum is added into C (K blocks are 512 long), plus one for
    # beta*C.  The standard analysis gives
    #     |err| <= gamma_n * (sum_k |a_ik||b_kj| + |beta c_ij|),
    # gamma_n = n*u/(1-n*u) ~ n*u, u = 2^-24, n = K + ceil(K/512) + 1.  We allow
    # (K + 2) * eps32 = (2K + 4) * u, which covers that worst case for every K;
    # errors of a correct kernel are typically ~sqrt(K)*u, so a wrong partial
    # sum, a dropped K block or a misplaced element still fails by far.
    # The tiny absolute floor only matters where the bound is exactly zero.
    mag = np.abs(opa) @ np.abs(opb) + (np.abs(beta * c0.astype(np.float64)) if beta else 0.0)
    tol = (K + 2) * np.finfo(np.float32).eps * mag + 1e-30
    got = cbuf[:M, :N]
    assert np.all(np.isfinite(got))
    err = np.abs(got - ref)
    assert np.all(err <= tol), (M, N, K, ta, tb, beta, pad, float(np.max(err / tol)))
    # Nothing outside the logical M x N window of C may be written.
    outside = np.ones(cbuf.shape, bool)
    outside[:M, :N] = False
    assert np.array_equal(cbuf[outside], before[outside])


TRANS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":")[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        return []


def nncc_rows_for_blocked(M, N, K):
    """A row (or column) count that takes M x N x K past the threading threshold."""
    return max(M, N, int(1e6 / (2 * min(M, N) * K)) + 1)


def assert_small_matches_blocked(gemm, ta, tb, threads):
    ffi, lib = gemm
    rng = np.random.default_rng(4000 + 10 * ta + tb)
    saved = lib.t_get_threads()
    lib.t_set_threads(threads)
    try:
        for M, N, K in [(32, 64, 64), (32, 1, 64), (64, 1, 32), (1, 64, 32), (13, 5, 40),
                        (9, 70, 3), (17, 130, 200), (100, 7, 512)]:
            big = 4 * nncc_rows_for_blocked(M, N, K)
            a = rng.standard_normal((K, big) if ta else (big, K), dtype=np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            # rows: op(A)[:M] vs the whole op(A)
            small_a = np.ascontiguousarray(a[:, :M] if ta else a[:M])
            c_small = np.full((M, N), np.nan, np.float32)
            call(gemm, ta, tb, small_a, small_a.shape[1], b, b.shape[1], 0.0, c_small, N, M, N, K)
            c_big = np.full((big, N), np.nan, np.float32)
            call(gemm, ta, tb, a, a.shape[1], b, b.shape[1], 0.0, c_big, N, big, N, K)
            assert np.array_equal(c_small.view(np.uint32), c_big[:M].view(np.uint32)), (M, N, K)
            # columns: op(B)[:, :N] vs a wide op(B)
            a2 = np.ascontiguousarray(a[:, :M] if ta else a[:M])
            b2 = rng.standard_normal((big, K) if tb else (K, big), dtype=np.float32)
            small_b = np.ascontiguousarray(b2[:N] if tb else b2[:, :N])
            c_small = np.full((M, N), np.nan, np.float32)
            call(gemm, ta, tb, a2, a2.shape[1], small_b, small_b.shape[1], 0.0, c_small, N, M, N, K)
            c_big = np.full((M, big), np.nan, np.float32)
            call(gemm, ta, tb, a2, a2.shape[1], b2, b2.shape[1], 0.0, c_big, big, M, big, K)
            assert np.array_equal(c_small.view(np.uint32), c_big[:, :N].view(np.uint32)), (M, N, K)
    finally:
        lib.t_set_threads(saved)


# Small path (both orientations) and blocked path, ragged and one-K-block shapes.
BITWISE_SHAPES = [(32, 64, 1), (64, 1, 32), (1, 64, 32), (9, 70, 130), (100, 12, 200), (13, 5, 40),
                  (64, 10, 128), (64, 128, 784), (784, 128, 64), (333, 517, 600), (1030, 40, 300)]


def assert_thread_count_independent(gemm, shapes, threads=(1, 2)):
    """C = product, C += product and the SGD update give the same bits on every thread
    count in `threads` for each (M, N, K, ta, tb), with C's rows padded (ldc > N) and the
    padding untouched: whichever way the team splits the work (rows, columns, K blocks) or
    none (small problems)."""
    ffi, lib = gemm
    rng = np.random.default_rng(7)
    p = lambda x: ffi.cast("float *", x.ctypes.data)
    saved = lib.t_get_threads()
    try:
        for M, N, K, ta, tb in shapes:
            a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            c0 = rng.standard_normal((M, N + 3), dtype=np.float32)
            for mode in ("product", "accumulate", "update"):
                outs = []
                for nt in threads:
                    lib.t_set_threads(nt)
                    c = c0.copy()
                    if mode == "update":
                        lib.t_sgemm_update(ta, tb, M, N, K, p(a), a.shape[1], p(b), b.shape[1], -0.01, p(c), N + 3)
                    else:
                        call(gemm, ta, tb, a, a.shape[1], b, b.shape[1], float(mode == "accumulate"), c, N + 3,
                             M, N, K)
                    outs.append(c.view(np.uint32))
                assert all(np.array_equal(outs[0], o) for o in outs[1:]), (M, N, K, ta, tb, mode)
                assert np.array_equal(outs[0][:, N:], c0[:, N:].view(np.uint32)), (M, N, K, ta, tb, mode)
    finally:
        lib.t_set_threads(saved)


def assert_same_bits(first, second, ta, tb, rng):
    """Both builds give the same bits for every shape of BITWISE_SHAPES, beta 0 and 1."""
    for M, N, K in BITWISE_SHAPES:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        c0 = rng.standard_normal((M, N), dtype=np.float32)
        for beta in (0.0, 1.0):
            outs = []
            for build_ in (first, second):
                c = c0.copy()
                call(build_, ta, tb, a, a.shape[1], b, b.shape[1], beta, c, N, M, N, K)
                outs.append(c.view(np.uint32))
            assert np.array_equal(outs[0], outs[1]), (M, N, K, ta, tb, beta)
