"""Tests for the float32 GEMM (nncc_sgemm: templates/kernels/gemm*.c.j2).

The kernel is pasted into a small C file with exported wrappers, built with the
flags used for generated modules, and called through cffi (ABI mode); or, as nncc
builds it, compiled in parts (runtime/build.py) that the wrappers link against.
"""
import platform
import shutil
import subprocess
import threading

import numpy as np
import pytest

from nncc.runtime.build import COMPILE_FLAGS, gemm_text, pin_openmp_runtime, toolchain_flags

cffi = pytest.importorskip("cffi")


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


@pytest.fixture(scope="session")
def gemm(tmp_path_factory):
    return build(tmp_path_factory.mktemp("gemm"))


@pytest.fixture(scope="session")
def gemm_split(tmp_path_factory):
    return build(tmp_path_factory.mktemp("gemm_split"), split=True)


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


SIZES = [0, 1, 7, 33, 65, 129, 300]
TRANS = [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_size_grid(gemm, ta, tb, beta):
    rng = np.random.default_rng(1000 + 10 * ta + tb + int(beta) * 100)
    for M in SIZES:
        for N in SIZES:
            for K in (0, 1, 7, 65, 300):
                if M * N * K > 300 * 300 * 65:
                    continue
                check(gemm, rng, M, N, K, ta, tb, beta)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_random_shapes_with_leading_dims(gemm, ta, tb, beta):
    rng = np.random.default_rng(2000 + 10 * ta + tb + int(beta) * 100)
    for _ in range(6):
        M, N, K = (int(x) for x in rng.integers(1, 400, size=3))
        check(gemm, rng, M, N, K, ta, tb, beta, pad=int(rng.integers(1, 20)))


@pytest.mark.parametrize("shape", [(13, 10, 1100), (1037, 47, 37), (61, 1030, 800), (300, 33, 9),
                                   (530, 200, 530)])
@pytest.mark.parametrize("ta,tb", TRANS)
def test_block_boundaries(gemm, shape, ta, tb):
    # Several K blocks, several M blocks, narrow and wide N, padded leading dims.
    M, N, K = shape
    rng = np.random.default_rng(M + N + K)
    check(gemm, rng, M, N, K, ta, tb, 1.0, pad=3)
    check(gemm, rng, M, N, K, ta, tb, 0.0, pad=0)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((l.split(":")[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        return []


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or
                    not {"avx2", "fma"} <= set(cpu_flags()), reason="needs an x86-64 CPU with AVX2")
@pytest.mark.parametrize("march", ["-march=x86-64-v3", "-march=x86-64", "-mfma"])
@pytest.mark.parametrize("split", [False, True])
def test_other_isa_paths(tmp_path, march, split):
    # The AVX2 and the portable (SSE2 / vector extension) code paths, small problems and
    # blocked, and their agreement; -mfma: the portable path with a fast fmaf
    # (__FP_FAST_FMAF), as on AArch64.
    gemm = build(tmp_path, march, split)
    rng = np.random.default_rng(5)
    for ta, tb in TRANS:
        for M, N, K in [(1, 1, 1), (7, 33, 65), (65, 7, 33), (129, 300, 65), (33, 129, 600)]:
            check(gemm, rng, M, N, K, ta, tb, 0.0, pad=2)
            check(gemm, rng, M, N, K, ta, tb, 1.0)
        assert_small_matches_blocked(gemm, ta, tb, threads=2)


def test_thread_count_independent(gemm):
    ffi, lib = gemm
    rng = np.random.default_rng(7)
    saved = lib.t_get_threads()
    try:
        for M, N, K, ta, tb in [(333, 517, 1201, 0, 0), (256, 10, 1024, 0, 0),
                                (1024, 10, 256, 1, 0), (256, 784, 1024, 0, 1), (129, 1000, 77, 1, 1),
                                # the big GEMMs of a W2 step; ragged M read in place
                                (64, 128, 784, 0, 0), (784, 128, 64, 1, 0), (781, 200, 70, 1, 0),
                                (781, 200, 70, 0, 1),
                                # small problems (one thread whatever the setting)
                                (32, 64, 64, 0, 1), (64, 1, 32, 1, 0), (31, 9, 100, 1, 1)]:
            a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            outs = []
            for nt in (1, 2):
                lib.t_set_threads(nt)
                c = np.full((M, N), np.nan, np.float32)
                call(gemm, ta, tb, a, a.shape[1], b, b.shape[1], 0.0, c, N, M, N, K)
                outs.append(c.view(np.uint32))
            assert np.array_equal(outs[0], outs[1]), (M, N, K, ta, tb)
    finally:
        lib.t_set_threads(saved)


def test_concurrent_callers(gemm):
    # Two host threads call the kernel at once (cffi releases the GIL); each
    # must get its own packing buffers.
    rng = np.random.default_rng(9)
    jobs = []
    for M, N, K in [(200, 300, 500), (150, 260, 700)]:
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        jobs.append((a, b, np.empty((M, N), np.float32)))
    errors = []

    def work(a, b, c):
        expected = a.astype(np.float64) @ b.astype(np.float64)
        try:
            for _ in range(20):
                c[...] = np.nan
                call(gemm, 0, 0, a, a.shape[1], b, b.shape[1], 0.0, c, c.shape[1], *c.shape, a.shape[1])
                np.testing.assert_allclose(c, expected, rtol=1e-4, atol=1e-3)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,N,K,ta,tb", [(256, 1024, 784, 0, 0), (1030, 40, 300, 0, 0), (600, 90, 600, 1, 0),
                                         (64, 128, 784, 0, 1), (5, 7, 0, 0, 0), (33, 65, 7, 1, 1),
                                         (784, 128, 64, 1, 0), (781, 130, 64, 1, 0),
                                         # the small path, both orientations
                                         (32, 64, 64, 0, 1), (32, 1, 64, 0, 0), (64, 1, 32, 1, 0),
                                         (1, 64, 32, 1, 0), (13, 5, 40, 0, 1), (9, 70, 3, 1, 1)])
def test_epilogue_runs_once_on_every_finished_element(gemm, threads, M, N, K, ta, tb):
    """nncc_sgemm_epilogue: each element of C is visited exactly once, after its product is
    complete (the result is 2 * A @ B + 1), whatever the blocking and threading."""
    ffi, lib = gemm
    rng = np.random.default_rng(M * N + K)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    c = np.full((M, N), np.nan, np.float32)
    visits = np.zeros((M, N), np.int32)
    saved = lib.t_get_threads()
    lib.t_set_threads(threads)
    try:
        p = lambda x: ffi.cast("float *", x.ctypes.data)
        lib.t_sgemm_epilogue(ta, tb, M, N, K, p(a), a.shape[1], p(b), b.shape[1], p(c), N,
                             ffi.cast("int32_t *", visits.ctypes.data))
    finally:
        lib.t_set_threads(saved)
    assert np.all(visits == 1)
    want = 2.0 * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)) + 1.0
    mag = 2.0 * np.abs(a.T if ta else a).astype(np.float64) @ np.abs(b.T if tb else b).astype(np.float64) + 1.0
    assert np.all(np.abs(c - want) <= (K + 3) * np.finfo(np.float32).eps * mag)


# Problems under the threading threshold (2*M*N*K < 1e6) with K <= 512 take a separate
# small path (no packing of a row-major op(B); few columns: computed as C^T); these grids
# cover its row counts (1, 2, 4, 8 rows computed, ragged rows packed), column tiles,
# masked column edges and both orientations.
SMALL_M = [1, 2, 3, 4, 5, 8, 9, 16, 17, 33]
SMALL_N = [1, 2, 5, 8, 9, 15, 16, 17, 33, 47, 48, 49, 64, 65, 97, 130]


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_small_path_grid(gemm, ta, tb, beta):
    rng = np.random.default_rng(3000 + 10 * ta + tb + int(beta) * 100)
    for M in SMALL_M:
        for N in SMALL_N:
            for K in (1, 2, 31, 64, 512, 513):
                if 2 * M * N * K >= 1e6:
                    continue
                check(gemm, rng, M, N, K, ta, tb, beta, pad=(M + N + K) % 3)
                check(gemm, rng, N, M, K, ta, tb, beta)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("threads", [1, 2])
def test_small_path_matches_blocked_path_bitwise(gemm, ta, tb, threads):
    """Every element of C gets the same arithmetic on every path: a small problem's result
    equals, bit for bit, the same rows (or columns) of a problem big enough for the
    blocked (and threaded) path, for K within one K block."""
    assert_small_matches_blocked(gemm, ta, tb, threads)


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


def nncc_rows_for_blocked(M, N, K):
    """A row (or column) count that takes M x N x K past the threading threshold."""
    return max(M, N, int(1e6 / (2 * min(M, N) * K)) + 1)


# Small path (both orientations) and blocked path, ragged and one-K-block shapes.
BITWISE_SHAPES = [(32, 64, 1), (64, 1, 32), (1, 64, 32), (9, 70, 130), (100, 12, 200), (13, 5, 40),
                  (64, 10, 128), (64, 128, 784), (784, 128, 64), (333, 517, 600), (1030, 40, 300)]


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


@pytest.mark.parametrize("ta,tb", TRANS)
def test_split_build_matches_one_translation_unit_bitwise(gemm, gemm_split, ta, tb):
    """The GEMM as nncc builds it (runtime/build.py: in parts) computes what the GEMM in one
    translation unit does, bit for bit."""
    assert_same_bits(gemm, gemm_split, ta, tb, np.random.default_rng(5000 + 10 * ta + tb))


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_clang_build_matches_gcc_bitwise(tmp_path, gemm):
    """Built by clang, as nncc builds it (in parts, -Werror), the GEMM computes GCC's bits:
    every path and transposition (the arithmetic is written out in intrinsics)."""
    clang = build(tmp_path, split=True, compiler="clang")
    for ta, tb in TRANS:
        assert_same_bits(gemm, clang, ta, tb, np.random.default_rng(6000 + 10 * ta + tb))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ta,tb", TRANS)
def test_update_equals_the_stored_product_applied_elementwise(gemm, gemm_split, ta, tb, threads):
    """nncc_sgemm_update (C += alpha * op(A) @ op(B), an SGD step that never stores the
    gradient) gives, bit for bit, the product P stored by nncc_sgemm and then applied as
    C + alpha * P in float32 (two roundings, as NumPy and nncc's elementwise loops), on
    every path (small, both orientations; blocked, rows or columns split; ragged edges),
    for any alpha including 0 and -0, in both builds. Past one K block (K > 512) the
    blocks are added in turn: correct to float32 accuracy."""
    ffi, lib = gemm
    rng = np.random.default_rng(6000 + 10 * ta + tb)
    p = lambda x: ffi.cast("float *", x.ctypes.data)
    saved = lib.t_get_threads()
    lib.t_set_threads(threads)
    try:
        for M, N, K in [(784, 128, 64), (128, 10, 64), (10, 128, 64), (1024, 1024, 256), (512, 784, 128),
                        (13, 5, 40), (9, 70, 3), (64, 64, 32), (1, 64, 32), (781, 130, 512), (5, 7, 0)]:
            a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            w = rng.standard_normal((M, N), dtype=np.float32)
            product = np.full((M, N), np.nan, np.float32)
            call(gemm, ta, tb, a, a.shape[1], b, b.shape[1], 0.0, product, N, M, N, K)
            for alpha in (-0.01, 0.0, -0.0, 1.0):
                want = w + np.float32(alpha) * product
                for ffi_, lib_ in (gemm, gemm_split):
                    got = w.copy()
                    lib_.t_sgemm_update(ta, tb, M, N, K, ffi_.cast("float *", a.ctypes.data), a.shape[1],
                                        ffi_.cast("float *", b.ctypes.data), b.shape[1], alpha,
                                        ffi_.cast("float *", got.ctypes.data), N)
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (M, N, K, alpha)
        M, N, K = 200, 150, 1100  # three K blocks
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        w = rng.standard_normal((M, N), dtype=np.float32)
        got = w.copy()
        lib.t_sgemm_update(ta, tb, M, N, K, p(a), a.shape[1], p(b), b.shape[1], -0.5, p(got), N)
        opa, opb = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
        mag = np.abs(w) + 0.5 * np.abs(opa) @ np.abs(opb)
        assert np.all(np.abs(got - (w - 0.5 * (opa @ opb))) <= (K + 4) * np.finfo(np.float32).eps * mag)
    finally:
        lib.t_set_threads(saved)


def test_the_compiler_knows_the_gemm_k_block():
    """The lowering adds an SGD step inside the GEMM only while K fits one K block."""
    import re

    from nncc.compiler.ops.linalg import GEMM_K_BLOCK

    assert re.search(r"#define NNCC_GEMM_KC (\d+)", gemm_text()).group(1) == str(GEMM_K_BLOCK)
