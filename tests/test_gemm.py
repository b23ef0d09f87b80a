"""Tests for the float32 GEMM (nncc_sgemm: templates/kernels/gemm*.c.j2): results against
float64, every path's bits, threads, epilogues, the SGD update. The harness is
gemm_harness.py; builds for other ISAs and compilers are in test_gemm_builds.py."""
import platform
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gemm_harness import TRANS, assert_small_matches_blocked, assert_thread_count_independent, call, check, cpu_flags
from guard import LINUX_ONLY, assert_script_completes
from nncc.runtime.build import gemm_text

SIZES = [0, 1, 7, 33, 65, 129, 300]


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


def test_thread_count_independent(gemm):
    """The same bits on 1 and 2 threads for every product form, on every kind of split."""
    assert_thread_count_independent(gemm, [
        (333, 517, 1201, 0, 0), (1024, 10, 256, 1, 0), (256, 784, 1024, 0, 1), (129, 1000, 77, 1, 1),
        # the big GEMMs of a W2 step; ragged M read in place; rows split over more rows
        # than one block of MC and more K than one block of KC
        (784, 128, 64, 1, 0), (781, 200, 70, 1, 0), (781, 200, 70, 0, 1), (1030, 40, 1100, 1, 0),
        # split K: W2's forward in every transposition, a ragged M and N, fewer rows than a
        # micro-tile, the largest C it takes
        (64, 128, 784, 0, 0), (64, 128, 784, 1, 0), (64, 128, 784, 0, 1), (64, 128, 784, 1, 1),
        (256, 10, 1024, 0, 0), (37, 101, 900, 1, 1), (5, 300, 700, 0, 0), (40, 409, 1000, 0, 1),
        # small problems (one thread whatever the setting)
        (32, 64, 64, 0, 1), (64, 1, 32, 1, 0), (31, 9, 100, 1, 1)])


def test_split_k_on_any_team_size(gemm):
    """Teams of 3, 4 and 6 threads (more than this machine's cores) give one thread's bits,
    whether K's blocks divide among them (K in 3 or 4 blocks: split K) or not."""
    assert_thread_count_independent(gemm, [(64, 128, 1500, 0, 0), (37, 50, 2000, 1, 1), (9, 200, 1100, 1, 0)],
                                     threads=(1, 3, 4, 6))


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


def test_the_compiler_knows_when_a_gemm_stays_on_one_thread():
    """fit runs the GEMMs the compiler calls one-thread alone while other threads gather."""
    import re

    from nncc.compiler.ops.linalg import GEMM_PARALLEL_MIN_FLOPS

    found = re.search(r"#define NNCC_GEMM_PAR_MIN_FLOPS ([\d.]+)", gemm_text()).group(1)
    assert float(found) == GEMM_PARALLEL_MIN_FLOPS


# Every operand ends at a page no one may touch; one process for all shapes, each printed
# before its call, so that a crash names its shape.
GUARD_SCRIPT = """
import itertools, pathlib, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from gemm_harness import build
from guard import at_page_end
ffi, lib = build(pathlib.Path(sys.argv[1]), march=sys.argv[3])
p = lambda x: ffi.cast("float *", x.ctypes.data)
rng = np.random.default_rng(0)
shapes = [(20, 10, 7), (100, 10, 64), (20, 1, 5), (33, 3, 9), (9, 70, 13), (13, 5, 40), (32, 64, 1),
          (64, 1, 32), (1, 64, 32), (37, 29, 1), (17, 130, 200), (100, 12, 200), (64, 10, 128),
          (333, 517, 600), (1030, 40, 300), (200, 3, 2000), (64, 128, 784), (40, 48, 600)]
for (M, N, K), ta, tb, beta in itertools.product(shapes, (0, 1), (0, 1), (0.0, 1.0)):
    print(M, N, K, ta, tb, beta, flush=True)
    keep_a, a = at_page_end(rng, K if ta else M, M if ta else K)
    keep_b, b = at_page_end(rng, N if tb else K, K if tb else N)
    keep_c, c = at_page_end(rng, M, N)
    c0 = c.astype(np.float64)
    lib.t_sgemm(ta, tb, M, N, K, p(a), a.shape[1], p(b), b.shape[1], beta, p(c), N)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64) + beta * c0
    assert np.allclose(c, want, rtol=1e-4, atol=1e-3), (M, N, K, ta, tb, beta)  # sanity; accuracy: above
print("done")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason=LINUX_ONLY)
@pytest.mark.parametrize("march", ["-march=native", "-march=x86-64-v3", "-march=x86-64"])
def test_no_read_or_write_past_the_operands(tmp_path, march):
    """Each operand ends at an inaccessible page: no path reads or writes past A, B or C,
    on AVX-512 (native here), AVX2 and the portable path. (The C^T path for few columns once
    read up to 15 floats past a transposed A whose rows are not whole vectors: a
    100 x 10 x 64 update of a layer 100 wide.)"""
    if march != "-march=native" and platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 ISA levels")
    if march == "-march=x86-64-v3" and not {"avx2", "fma"} <= set(cpu_flags()):
        pytest.skip("needs a CPU with AVX2")
    assert_script_completes(GUARD_SCRIPT, tmp_path, Path(__file__).parent, march, what="M N K ta tb beta")
