"""Optimizers and LR schedules: compiled == reference always; == torch.optim where torch is
installed; closed forms otherwise."""
import math

import numpy as np
import pytest

import nncc
from nncc.schedules import CosineAnnealingLR, ExponentialLR, LinearWarmup, StepLR

IN, HID, OUT, ROWS = 6, 5, 3, 16


def mlp():
    """6 -> 5 -> 3, tanh, softmax cross-entropy; params W0, b0, W1, b1 as torch_run expects."""
    b = nncc.GraphBuilder()
    h = b.input("x", (None, IN))
    b.input("y", (None,), dtype="int32")
    for i, (width, out) in enumerate([(IN, HID), (HID, OUT)]):
        w = b.param(f"W{i}", (width, out))
        bias = b.param(f"b{i}", (out,), fan_in=width)
        h = b.add(b.matmul(h, w), bias, name=f"z{i}")
        if i == 0:
            h = b.tanh(h, name="h")
    b.softmax_cross_entropy(h, "y", name="loss")
    return b.graph


rng = np.random.default_rng(0)
FEEDS = {"x": rng.normal(size=(ROWS, IN)).astype(np.float32), "y": rng.integers(0, OUT, ROWS).astype(np.int32)}

OPTIMIZERS = {
    "sgd": nncc.SGD(lr=0.1),
    "sgd-wd": nncc.SGD(lr=0.1, weight_decay=0.01),
    "momentum": nncc.SGD(lr=0.1, momentum=0.9),
    "nesterov": nncc.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": nncc.Adam(lr=0.01),
    "adam-wd": nncc.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
    "adamw": nncc.AdamW(lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_reference(name):
    trainer = nncc.compile(mlp(), optimizer=OPTIMIZERS[name], batch_size=ROWS)
    nncc.testing.assert_matches_reference(trainer, FEEDS, steps=20)


def torch_run(optimizer_name, trainer, steps, schedule=None):
    torch = pytest.importorskip("torch")
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in trainer.params.items()}
    opt = OPTIMIZERS[optimizer_name]
    order = [params[k] for k in ("W0", "b0", "W1", "b1")]
    if isinstance(opt, nncc.AdamW):
        topt = torch.optim.AdamW(order, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    elif isinstance(opt, nncc.Adam):
        topt = torch.optim.Adam(order, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    else:
        topt = torch.optim.SGD(order, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay)
    sched = schedule(topt) if schedule else None
    x, y = torch.tensor(FEEDS["x"]), torch.tensor(FEEDS["y"].astype(np.int64))
    losses = []
    for _ in range(steps):
        topt.zero_grad()
        h = torch.tanh(x @ params["W0"] + params["b0"])
        loss = torch.nn.functional.cross_entropy(h @ params["W1"] + params["b1"], y)
        loss.backward()
        topt.step()
        if sched:
            sched.step()
        losses.append(loss.item())
    return losses, {k: v.detach().numpy() for k, v in params.items()}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_torch_over_20_steps(name):
    trainer = nncc.compile(mlp(), optimizer=OPTIMIZERS[name], batch_size=ROWS)
    want_losses, want_params = torch_run(name, trainer, 20)
    got_losses = [trainer.step(**FEEDS) for _ in range(20)]
    # Both sides compute in float32 from the same start; op order differs (summation order,
    # fused expressions), so agreement is to a few float32 ulps growing over 20 steps.
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5, atol=1e-6)
    for k, v in want_params.items():
        np.testing.assert_allclose(trainer.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


SCHEDULES = {
    "step": (StepLR(step_size=3, gamma=0.5), lambda o: __import__("torch").optim.lr_scheduler.StepLR(o, 3, 0.5),
             lambda t: 0.1 * 0.5 ** (t // 3)),
    "exponential": (ExponentialLR(gamma=0.9), lambda o: __import__("torch").optim.lr_scheduler.ExponentialLR(o, 0.9),
                    lambda t: 0.1 * 0.9 ** t),
    "cosine": (CosineAnnealingLR(T_max=7, eta_min=0.01),
               lambda o: __import__("torch").optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.01),
               lambda t: 0.01 + 0.09 * (1 + math.cos(math.pi * t / 7)) / 2),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_closed_form_and_reference(name):
    schedule, _, closed = SCHEDULES[name]
    trainer = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.1, schedule=schedule), batch_size=ROWS)
    ref = nncc.testing.reference_for(trainer)
    for t in range(12):
        assert trainer.lr == pytest.approx(closed(t), rel=1e-6)
        np.testing.assert_allclose(trainer.step(**FEEDS), ref.step(**FEEDS), rtol=1e-5)
    for k, v in trainer.params.items():
        np.testing.assert_allclose(v, ref.params[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch(name):
    pytest.importorskip("torch")
    schedule, torch_schedule, _ = SCHEDULES[name]
    trainer = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.1, schedule=schedule), batch_size=ROWS)
    want_losses, want_params = torch_run("sgd", trainer, 12, schedule=torch_schedule)
    got = [trainer.step(**FEEDS) for _ in range(12)]
    np.testing.assert_allclose(got, want_losses, rtol=1e-5, atol=1e-6)
    for k, v in want_params.items():
        np.testing.assert_allclose(trainer.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_warmup_then_cosine_closed_form():
    schedule = LinearWarmup(4, after=CosineAnnealingLR(T_max=6))
    trainer = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.2, schedule=schedule), batch_size=ROWS)
    ref = nncc.testing.reference_for(trainer)
    expected = [0.2 * (t + 1) / 4 for t in range(4)] + [0.1 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
    for want in expected:
        assert trainer.lr == pytest.approx(want, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose(trainer.step(**FEEDS), ref.step(**FEEDS), rtol=1e-5)


def test_changing_lr_or_schedule_never_rebuilds():
    trainer = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.1), batch_size=ROWS)
    library = trainer.report.library
    trainer.lr = 0.0
    before = trainer.params["W0"].copy()
    trainer.step(**FEEDS)
    np.testing.assert_array_equal(trainer.params["W0"], before)  # lr 0: no change
    trainer.schedule = ExponentialLR(gamma=0.5)
    trainer.lr = 0.4
    assert trainer.lr == pytest.approx(0.4 * 0.5 ** 1)  # one step already taken
    again = nncc.compile(mlp(), optimizer=nncc.SGD(lr=0.3, schedule=StepLR(2)), batch_size=ROWS)
    assert again.report.cache_hit and again.report.library == library
