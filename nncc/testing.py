"""Helpers for users' own tests: compare a compiled Trainer with the reference interpreter."""
from __future__ import annotations

import numpy as np

from nncc.compiler.interpreter import Interpreter
from nncc.runtime.trainer import EPOCH_KEY, LR_KEY, SEED_KEY, SHUFFLE_SEED_KEY, STEP_KEY

# float32 tolerances: the compiled step rounds every op to float32 (unit roundoff 6e-8);
# over a handful of layers and steps, relative errors stay well under 1e-4. The reference
# runs in float64 from the same float32 start values.
RTOL, ATOL = 1e-4, 1e-5


def reference_for(trainer) -> Interpreter:
    """An interpreter of the trainer's graph starting from the trainer's current state."""
    spec = trainer.spec
    ref = Interpreter(spec.graph, loss=spec.loss, outputs=list(spec.outputs), optimizer=spec.optimizer,
                      seed=spec.seed)
    state = trainer.state_dict()
    ref.load_state_dict(state)
    ref.lr, ref.global_step, ref.seed = float(state[LR_KEY]), int(state[STEP_KEY]), int(state[SEED_KEY])
    ref.epoch, ref.shuffle_seed = int(state[EPOCH_KEY]), int(state[SHUFFLE_SEED_KEY])
    return ref


def run_both(trainer, feeds, steps=3):
    """Train `steps` steps compiled and in the reference from the same state.

    Returns [(what, compiled, reference)] for each step's loss, every param and state
    buffer afterwards, and the eval-mode outputs.
    """
    ref = reference_for(trainer)
    pairs = [(f"loss at step {k + 1}", trainer.step(**feeds), ref.step(**feeds)) for k in range(steps)]
    pairs += [(name, value, ref.state[name]) for name, value in trainer.state_dict().items() if name in ref.state]
    predicted, expected = trainer.predict(**feeds), ref.predict(**feeds)
    pairs += [(f"output {name}", predicted[name], expected[name]) for name in predicted]
    return pairs


def largest_differences(pairs):
    """what -> (largest absolute difference, largest relative difference)."""
    out = {}
    for what, got, want in pairs:
        diff = np.abs(np.asarray(got, dtype=np.float64) - want)
        rel = diff / np.maximum(np.abs(want), 1e-12)
        out[what] = (float(np.max(diff, initial=0)), float(np.max(rel, initial=0)))
    return out


def assert_matches_reference(trainer, feeds, steps=3, rtol=RTOL, atol=ATOL):
    """Assert that `steps` compiled train steps agree with the float64 reference: each loss,
    every param and state buffer, and the eval outputs, to float32 tolerance."""
    for what, got, want in run_both(trainer, feeds, steps):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
