"""Shared test setup.

Every compiled library built by the suite goes to a cache directory private to this test
session, so tests never read a stale entry from (or write into) the user's ~/.cache/nncc.
"""
import os
import shutil
import tempfile

import pytest

from gemm_harness import build as build_gemm

# Set at import time (before any test module compiles anything, including module-scoped
# fixtures and hypothesis examples), restored at the end of the session.
_PREVIOUS_CACHE_DIR = os.environ.get("NNCC_CACHE_DIR")
_SESSION_CACHE_DIR = tempfile.mkdtemp(prefix="nncc-test-cache-")
os.environ["NNCC_CACHE_DIR"] = _SESSION_CACHE_DIR


@pytest.fixture(scope="session", autouse=True)
def nncc_cache_dir():
    """The session's private build cache (removed afterwards)."""
    os.environ["NNCC_CACHE_DIR"] = _SESSION_CACHE_DIR
    yield _SESSION_CACHE_DIR
    if _PREVIOUS_CACHE_DIR is None:
        os.environ.pop("NNCC_CACHE_DIR", None)
    else:
        os.environ["NNCC_CACHE_DIR"] = _PREVIOUS_CACHE_DIR
    shutil.rmtree(_SESSION_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def gemm(tmp_path_factory):
    """The GEMM in one translation unit with the test wrappers (gemm_harness.py)."""
    return build_gemm(tmp_path_factory.mktemp("gemm"))


@pytest.fixture(scope="session")
def gemm_split(tmp_path_factory):
    """The GEMM compiled in parts, as nncc builds it."""
    return build_gemm(tmp_path_factory.mktemp("gemm_split"), split=True)
