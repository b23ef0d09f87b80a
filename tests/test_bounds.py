"""Compiled models never read past the caller's arrays, nor past their arena: every feed and
the arena end where a page no process may touch begins, and step, fit, predict and evaluate
run on the examples with whole, partial and several batches. A read past a feed dies (SIGSEGV), so the run is a
subprocess that prints each case before it: a crash names the case. (The GEMM's own
operands are checked the same way in test_gemm.py.)"""
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from gemm_harness import at_page_end
import nncc
import classifier, norm_dropout, regression

rng = np.random.default_rng(0)
kept = []

def at_end(array):
    mapping, guarded = at_page_end(rng, array.shape[0], array.size // max(array.shape[0], 1))
    guarded = guarded.view(array.dtype).reshape(array.shape)
    guarded[...] = array
    kept.append(mapping)
    return guarded

for mod in (classifier, norm_dropout, regression):
    trainer = nncc.compile(mod.model(), outputs=mod.outputs, optimizer=mod.optimizer,
                           batch_size=mod.batch_size)
    # the arena too: no kernel writes or reads past the planned floats
    arena = at_end(trainer.arena)
    trainer.arena, trainer._arena_ptr = arena, trainer._ffi.cast("float *", arena.ctypes.data)
    data = mod.data(rows=3 * mod.batch_size + 5)
    for rows in (mod.batch_size, mod.batch_size - 3, 2, 3 * mod.batch_size + 5):
        feeds = {name: at_end(np.ascontiguousarray(array[:rows])) for name, array in data.items()}
        print(mod.__name__, rows, flush=True)
        if rows <= mod.batch_size:
            trainer.step(**feeds)
        trainer.fit(epochs=1, **feeds)
        trainer.predict(**{k: v for k, v in feeds.items() if k in trainer.program.eval.feeds})
        trainer.evaluate(**feeds)
print("done")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through ctypes: Linux")
def test_kernels_touch_nothing_past_the_feeds_or_the_arena():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(TESTS), str(TESTS.parent / "examples")],
                          capture_output=True, text=True, timeout=300)
    last = proc.stdout.strip().splitlines()[-1:] or ["(nothing)"]
    assert proc.returncode == 0 and last == ["done"], (
        f"exit {proc.returncode} at model rows = {last[0]}\n{proc.stderr[-2000:]}")
