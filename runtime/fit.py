"""Trainer.fit: whole epochs of mini-batches run in C, one C call per epoch.

The shuffle of each epoch is a permutation drawn from (shuffle seed, global epoch count)
by the counter-based generator, so a resumed run (counters are in checkpoints) follows the
same trajectory. The epoch loss is the mean over the epoch's rows of each step's loss
(each step's loss weighted by its rows, as Keras reports it).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from nncc.compiler.errors import FeedError

from .feeds import gather


def fit(trainer, feeds, *, epochs, batch_size, shuffle, seed, drop_last, validation_data, step_losses, verbose):
    program = trainer.program
    entry = program.train
    arrays, rows = gather(entry.graph, entry.feeds, feeds, "fit()", entry.graph.inputs)
    batch = batch_size or program.capacity
    if not 1 <= batch <= program.capacity:
        raise ValueError(f"fit(batch_size={batch}): batches hold 1..{program.capacity} rows, the batch_size "
                         f"the trainer was compiled for")
    if rows == 0:
        raise FeedError("fit() needs at least one row", feed=entry.feeds[0] if entry.feeds else None)
    if seed is not None:
        trainer._rt.shuffle_seed = int(seed)
    steps = rows // batch if drop_last else -(-rows // batch)
    used = steps * batch if drop_last else rows
    if steps == 0:
        raise ValueError(f"fit(): {rows} rows make no full batch of {batch} with drop_last=True")
    ffi, lib = trainer._ffi, trainer._lib
    pointers = [ffi.from_buffer("int32_t[]" if a.dtype == np.int32 else "float[]", a) for a in arrays]
    order = np.empty(rows, dtype=np.int64)
    order_ptr = ffi.from_buffer("int64_t[]", order)
    loss_sum = ffi.new("double *")
    history = {"loss": []}
    if step_losses:
        history["step_loss"] = []
    for epoch in range(epochs):
        start = time.perf_counter()
        losses = np.empty(steps, dtype=np.float32) if step_losses else None
        code = lib.nncc_fit_epoch(trainer._rt, trainer._arena_ptr, rows, *pointers, batch, bool(shuffle),
                                  bool(drop_last), order_ptr,
                                  ffi.from_buffer("float[]", losses) if step_losses else ffi.NULL, loss_sum)
        if code:
            trainer._raise(entry, code, dict(zip(entry.feeds, arrays)))
        history["loss"].append(loss_sum[0] / used)
        if step_losses:
            history["step_loss"].append(losses)
        if validation_data is not None:
            result = trainer.evaluate(**validation_data)
            for key, value in result.items():
                history.setdefault(f"val_{key}", []).append(value)
        if verbose:
            shown = "  ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if k != "step_loss")
            print(f"epoch {trainer._rt.epoch:>4}  {shown}  ({time.perf_counter() - start:.2f} s)",
                  file=sys.stderr if verbose == "stderr" else sys.stdout, flush=True)
    return history
