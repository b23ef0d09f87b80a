"""Checkpoints resume bit for bit, are written atomically, and refuse models they don't fit."""
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nncc
from nncc import CheckpointError

from test_optim import FEEDS, ROWS, mlp

OPTIMIZER = nncc.Adam(lr=0.01, schedule=nncc.schedules.ExponentialLR(0.9))


def test_resume_in_a_new_process_is_bitwise_identical(tmp_path):
    straight = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    for _ in range(10):
        straight.step(**FEEDS)

    first = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    for _ in range(5):
        first.step(**FEEDS)
    first.save(tmp_path / "ckpt.nncc")
    np.savez(tmp_path / "feeds.npz", **FEEDS)
    script = textwrap.dedent(f"""
        import numpy as np, nncc
        feeds = dict(np.load({str(tmp_path / 'feeds.npz')!r}))
        trainer = nncc.load({str(tmp_path / 'ckpt.nncc')!r})
        assert trainer.global_step == 5
        for _ in range(5):
            trainer.step(**feeds)
        np.savez({str(tmp_path / 'resumed.npz')!r}, **trainer.state_dict())
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    resumed = np.load(tmp_path / "resumed.npz")
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    path = tmp_path / "ckpt.nncc"
    trainer.save(path)
    good = path.read_bytes()
    trainer.step(**FEEDS)

    def dies_half_way(obj, f, protocol=None):
        f.write(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(pickle, "dump", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.nncc"]  # no temp file left


def test_state_that_does_not_fit_is_a_clear_error():
    trainer = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    state = trainer.state_dict()
    state["W0"] = np.zeros((2, 2), np.float32)
    with pytest.raises(CheckpointError, match=r"'W0': shape \(2, 2\) in the state, \(6, 5\) in the model"):
        trainer.load_state_dict(state)
    other = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.1), batch_size=ROWS)
    with pytest.raises(CheckpointError, match=r"unexpected \['W0.exp_avg'"):
        other.load_state_dict(trainer.state_dict())


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        nncc.load(path)


def test_restoring_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    trainer = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    trainer.save(tmp_path / "a.nncc")
    graph = mlp()
    graph.nodes["W0"]["shape"] = (6, 7)
    graph.nodes["b0"]["shape"] = (7,)
    graph.nodes["W1"]["shape"] = (7, 3)
    other = nncc.compile(graph, optimizer=OPTIMIZER, batch_size=ROWS)
    before = other.state_dict()
    with pytest.raises(CheckpointError, match=r"'W0': shape \(6, 5\) in the state, \(6, 7\) in the model"):
        other.restore(tmp_path / "a.nncc")
    for name, value in other.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[name])
    same = nncc.compile(mlp(), optimizer=OPTIMIZER, batch_size=ROWS)
    same.restore(tmp_path / "a.nncc")


def test_a_checkpoint_keeps_the_compile_options(tmp_path):
    """nncc.load rebuilds with the options the model was compiled with (keep_grads here)."""
    trainer = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.1), batch_size=ROWS, keep_grads=True)
    trainer.step(**FEEDS)
    trainer.save(tmp_path / "ckpt.nncc")
    loaded = nncc.load(tmp_path / "ckpt.nncc")
    assert loaded.spec.keep_grads
    loaded.step(**FEEDS)
    trainer.step(**FEEDS)
    for name, grad in trainer.grads.items():
        np.testing.assert_array_equal(loaded.grads[name], grad, err_msg=name)
