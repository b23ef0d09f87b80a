"""The GEMM built other ways than nncc builds it on this machine: for AVX2 and the portable
path, in one translation unit or in parts, by clang: each computes what nncc's build does."""
import platform
import shutil

import numpy as np
import pytest

from gemm_harness import (TRANS, assert_same_bits, assert_small_matches_blocked, assert_thread_count_independent,
                          build, check, cpu_flags)


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
    # split K (whole vectors of B read in place, or packed), split rows, split columns
    assert_thread_count_independent(gemm, [(64, 128, 784, 0, 0), (64, 128, 784, 1, 1), (33, 129, 600, 0, 0),
                                           (300, 40, 64, 1, 0), (64, 300, 200, 0, 1)])


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
