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
