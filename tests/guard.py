"""Bounds checks: arrays that end where a page no process may touch begins, and a runner
for scripts that exercise them case by case in a subprocess (a read or write past such an
array dies with SIGSEGV; each case is printed before it runs, so a crash names its case)."""
import ctypes
import mmap
import subprocess
import sys

import numpy as np

LINUX_ONLY = "mprotect through ctypes: Linux"


def at_page_end(rng, rows, cols):
    """A rows x cols float32 array (random) that ends where a page no process may touch
    begins: a kernel that reads or writes one float past it dies (SIGSEGV). Returns the
    mapping too (keep it alive)."""
    page, size = mmap.PAGESIZE, rows * cols * 4
    pages = -(-size // page) + 1
    mapping = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    mprotect = ctypes.CDLL(None, use_errno=True).mprotect
    mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if mprotect(base + (pages - 1) * page, page, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect")
    array = np.frombuffer(mapping, np.float32, rows * cols, (pages - 1) * page - size).reshape(rows, cols)
    array[:] = rng.standard_normal((rows, cols), dtype=np.float32)
    return mapping, array


def assert_script_completes(script, *args, what="case"):
    """Run `script` (python -c) with `args`; it prints each case before running it and
    "done" at the end. Fails naming the last case printed when it did not get there."""
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    last = proc.stdout.strip().splitlines()[-1:] or ["(nothing)"]
    assert proc.returncode == 0 and last == ["done"], (
        f"exit {proc.returncode} at {what} = {last[0]}\n{proc.stderr[-2000:]}")
