"""Checkpoints: everything needed to resume training on exactly the same trajectory.

A checkpoint holds the model (graph and compile options) and the trainer state (params,
optimizer state, step counter, base learning rate). It is written to a temporary file in
the same directory, flushed to disk and renamed over the target, so a crash mid-save leaves
the previous checkpoint intact. Checkpoints are pickles: load only files you trust.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

from nncc.compiler.errors import CheckpointError

FORMAT = "nncc-checkpoint"
VERSION = 1


def save(trainer, path):
    path = Path(path)
    spec = trainer.spec
    payload = {"format": FORMAT, "version": VERSION,
               "model": {"graph": spec.graph, "loss": spec.loss, "outputs": list(spec.outputs),
                         "optimizer": spec.optimizer, "batch_size": spec.batch_size, "seed": spec.seed,
                         "fusion": spec.fusion, "name": spec.name, "accumulate": spec.accumulate,
                         "keep_grads": spec.keep_grads},
               "schedule": trainer.schedule, "state": trainer.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path):
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an nncc checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {payload.get('version')}, "
                              f"this nncc reads version {VERSION}")
    return payload


def load(path):
    """A Trainer rebuilt from the checkpoint's model (a cache hit when built before) with its state."""
    from .compile import compile_graph

    payload = read(path)
    model = payload["model"]
    trainer = compile_graph(model["graph"], loss=model["loss"], outputs=model["outputs"],
                            optimizer=model["optimizer"], batch_size=model["batch_size"], seed=model["seed"],
                            fusion=model["fusion"], name=model["name"], accumulate=model.get("accumulate", False),
                            keep_grads=model.get("keep_grads", False))
    trainer.schedule = payload["schedule"]
    trainer.load_state_dict(payload["state"])
    return trainer

