"""Compiled models never read past the caller's arrays, nor past their arena: every feed and
the arena end where a page no process may touch begins (tests/guard.py), and step, fit,
predict and evaluate run on the examples with whole, partial and several batches. (The
GEMM's own operands are checked the same way in test_gemm.py.)"""
import sys
from pathlib import Path

import pytest

from guard import LINUX_ONLY, assert_script_completes

TESTS = Path(__file__).resolve().parent
SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from guard import at_page_end
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason=LINUX_ONLY)
def test_kernels_touch_nothing_past_the_feeds_or_the_arena():
    assert_script_completes(SCRIPT, TESTS, TESTS.parent / "examples", what="model rows")
