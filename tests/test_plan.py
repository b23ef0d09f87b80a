"""Fusion and the memory plan: same numbers either way; no two live buffers overlap."""
import sys
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc.compiler.memory import overlapping_live_buffers

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import classifier  # noqa: E402
import regression  # noqa: E402


def feeds_for(module, rows):
    return {k: v[:rows] for k, v in module.data().items()}


@pytest.mark.parametrize("module", [classifier, regression], ids=["classifier", "regression"])
def test_fusion_on_and_off_give_the_same_numbers(module):
    feeds = feeds_for(module, module.batch_size)
    losses = {}
    for fusion in (True, False):
        trainer = nncc.compile(module.model(), outputs=module.outputs, optimizer=module.optimizer,
                               batch_size=module.batch_size, fusion=fusion)
        losses[fusion] = [trainer.step(**feeds) for _ in range(3)], trainer.state_dict()
    fused_steps = [k for k in trainer.report.kernels if len(k[2]) > 1]
    assert not fused_steps  # the unfused build really has one kernel per op
    assert losses[True][0] == losses[False][0]  # bitwise: fusion only keeps values in registers
    for name, value in losses[True][1].items():
        np.testing.assert_array_equal(value, losses[False][1][name], err_msg=name)


@pytest.mark.parametrize("module", [classifier, regression], ids=["classifier", "regression"])
def test_no_two_live_buffers_overlap(module):
    trainer = nncc.compile(module.model(), outputs=module.outputs, optimizer=module.optimizer,
                           batch_size=module.batch_size)
    program = trainer.program
    for entry in (program.train, program.eval):
        assert overlapping_live_buffers(entry.buffers.values()) == []
        for b in entry.buffers.values():
            assert b.offset % 16 == 0 and b.offset + b.size <= program.arena_floats
    assert program.arena_floats < program.naive_floats()  # reuse actually happened


def test_fused_kernels_are_reported():
    trainer = nncc.compile(classifier.model(), outputs=classifier.outputs, batch_size=8)
    fused = {k[1]: k[2] for k in trainer.report.kernels if len(k[2]) > 1}
    # the matmul, its bias add and the relu: one GEMM whose epilogue finishes each block
    assert fused["fwd_h"] == ("fc1.matmul", "fc1", "h")
    # backward: the relu gradient is the epilogue of the matmul producing its input
    assert fused["bwd_dh_relu_grad"] == ("dlogits.matmul/matmul", "dh/relu_grad")
    assert "fused" in str(trainer.report)


def gemm_updates(trainer):
    """Train-step kernels in which a GEMM adds an SGD step into the weights."""
    return [k.nodes for k in trainer.program.train.kernels if k.call and "nncc_sgemm_update" in k.call]


@pytest.mark.parametrize("optimizer", [nncc.SGD(lr=0.1), nncc.SGD(lr=0.0), nncc.SGD(lr=0.1, momentum=0.9),
                                       nncc.SGD(lr=0.1, weight_decay=0.01), nncc.Adam(lr=1e-3)],
                         ids=["sgd", "lr 0", "momentum", "weight decay", "adam"])
@pytest.mark.parametrize("module", [classifier, regression], ids=["classifier", "regression"])
def test_sgd_added_by_the_gemm_gives_the_bits_of_stored_gradients(module, optimizer):
    """By default an SGD step W -= lr * X^T dY is added into W by the GEMM itself (the
    gradient is never stored); keep_grads=True stores every gradient and then applies it.
    Each weight element is rounded once either way (a fused multiply-add): same bits over
    several steps. Other optimizers read the gradient, which then lives as a temporary."""
    feeds = feeds_for(module, module.batch_size)
    results, folded = {}, {}
    for keep in (False, True):
        trainer = nncc.compile(module.model(), outputs=module.outputs, optimizer=optimizer,
                               batch_size=module.batch_size, keep_grads=keep)
        results[keep] = [trainer.step(**feeds) for _ in range(3)], trainer.state_dict()
        folded[keep] = gemm_updates(trainer)
        kinds = {b.kind for b in trainer.program.train.buffers.values()}
        assert ("grad" in kinds) == keep
    plain_sgd = isinstance(optimizer, nncc.SGD) and not optimizer.momentum and not optimizer.weight_decay
    weights = [p for p, value in trainer.params.items() if value.ndim == 2]  # each a matmul's operand
    assert sorted(f"update({p})" for p in weights) == sorted(n[1] for n in folded[False]) if plain_sgd \
        else not folded[False]
    assert not folded[True]
    assert results[False][0] == results[True][0]
    for name, value in results[True][1].items():
        np.testing.assert_array_equal(results[False][1][name], value, err_msg=name)


def test_batches_past_one_gemm_k_block_keep_the_stored_gradient():
    """nncc_sgemm_update rounds once only while the batch (its K) fits one K block of the
    GEMM: a larger capacity stores the gradient and applies it, as before."""
    from nncc.compiler.ops.linalg import GEMM_K_BLOCK

    rows = GEMM_K_BLOCK + 88
    trainer = nncc.compile(classifier.model(), outputs=classifier.outputs, optimizer=classifier.optimizer,
                           batch_size=rows)
    assert not gemm_updates(trainer)
    nncc.testing.assert_matches_reference(trainer, feeds_for(classifier, rows), steps=2)


def test_gradients_are_readable_only_when_kept():
    feeds = feeds_for(classifier, 16)
    trainer = nncc.compile(classifier.model(), outputs=classifier.outputs, batch_size=16)
    with pytest.raises(RuntimeError, match="keep_grads=True"):
        trainer.grads
    trainer = nncc.compile(classifier.model(), outputs=classifier.outputs, batch_size=16, keep_grads=True)
    want = nncc.testing.reference_for(trainer).gradients(**feeds)
    trainer.step(**feeds)
    assert set(trainer.grads) == set(trainer.params)
    for name, grad in trainer.grads.items():
        np.testing.assert_allclose(grad, want[name], rtol=nncc.testing.RTOL, atol=nncc.testing.ATOL, err_msg=name)
