"""Training as users run it: fit in C, dropout masks, LayerNorm/BatchNorm, resuming."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc import FeedError

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import classifier  # noqa: E402
import norm_dropout  # noqa: E402


def small_w4(p=0.2):
    return norm_dropout.model(features=12, hidden=10, classes=4, p=p)


def small_data(rows, seed=0):
    return norm_dropout.data(rows=rows, seed=seed, features=12, classes=4)


class CountingLibrary:
    """Stands in for the cffi library and counts the calls that cross into C."""

    def __init__(self, lib):
        self.lib, self.calls = lib, []

    def __getattr__(self, name):
        fn = getattr(self.lib, name)

        def call(*args):
            self.calls.append(name)
            return fn(*args)
        return call


def test_fit_follows_the_reference_step_by_step():
    trainer = nncc.compile(small_w4(), outputs=["logits"], optimizer=nncc.SGD(lr=0.1, momentum=0.9), batch_size=16)
    ref = nncc.testing.reference_for(trainer)
    data = small_data(100)  # 6 full batches and a partial one of 4 rows
    got = trainer.fit(epochs=2, batch_size=16, seed=3, step_losses=True, **data)
    want = ref.fit(epochs=2, batch_size=16, seed=3, step_losses=True, **data)
    for epoch in range(2):
        np.testing.assert_allclose(got["step_loss"][epoch], want["step_loss"][epoch], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4)
    for name, value in trainer.state_dict().items():
        if name in ref.state:
            np.testing.assert_allclose(value, ref.state[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_fit_history_shape_drop_last_and_validation():
    trainer = nncc.compile(small_w4(), outputs=["logits"], batch_size=16)
    history = trainer.fit(epochs=3, batch_size=16, drop_last=True, step_losses=True,
                          validation_data=small_data(50, seed=1), **small_data(100))
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["val_accuracy"]) == 3
    assert [len(s) for s in history["step_loss"]] == [6, 6, 6]  # 100 // 16, the partial batch dropped
    assert trainer.global_step == 18
    assert 0.0 <= history["val_accuracy"][-1] <= 1.0
    result = trainer.evaluate(**small_data(50, seed=1))
    assert result["loss"] == pytest.approx(history["val_loss"][-1])


def test_fit_rejects_batches_larger_than_compiled():
    trainer = nncc.compile(small_w4(), outputs=["logits"], batch_size=16)
    with pytest.raises(ValueError, match=r"batches hold 1\.\.16 rows"):
        trainer.fit(batch_size=32, **small_data(64))


@pytest.mark.parametrize("wide", [False, True])
def test_fit_reports_a_bad_label_by_its_row_in_the_callers_array(wide):
    """Also where the label check runs while other threads gather the next batch (wide)."""
    if wide:
        trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=64)
        data, bad_row, bad_label = classifier.data(rows=200), 137, 10
    else:
        trainer = nncc.compile(small_w4(), outputs=["logits"], batch_size=16)
        data, bad_row, bad_label = small_data(40), 37, 9
    data["y"][bad_row] = bad_label
    with pytest.raises(FeedError, match=rf"feed 'y': label {bad_label} at row {bad_row} "):
        trainer.fit(**data)


def test_e1_epoch_is_one_c_call_and_matches_the_reference_shuffle():
    """The E1 setup: W2 model, 60,000 x 784 samples, batches of 64, one epoch."""
    trainer = nncc.compile(classifier.model(), outputs=["logits"], optimizer=nncc.SGD(lr=0.01), batch_size=64)
    data = classifier.data(rows=60_000)
    ref = nncc.testing.reference_for(trainer)
    counting = CountingLibrary(trainer._lib)
    trainer._lib = counting
    history = trainer.fit(epochs=1, batch_size=64, shuffle=True, seed=0, drop_last=True, step_losses=True, **data)
    assert counting.calls == ["nncc_fit_epoch"]
    assert len(history["step_loss"][0]) == 937
    # The reference runs the same shuffle; its last batch loss after 937 steps agrees.
    want = ref.fit(epochs=1, batch_size=64, seed=0, drop_last=True, step_losses=True, **data)
    np.testing.assert_allclose(history["step_loss"][0][-1], want["step_loss"][0][-1], rtol=1e-4)


def test_resume_after_epoch_2_in_a_new_process_is_bitwise(tmp_path):
    data = small_data(70)
    straight = nncc.compile(small_w4(), outputs=["logits"], optimizer=nncc.Adam(lr=0.01), batch_size=16)
    straight.fit(epochs=3, batch_size=16, seed=5, **data)

    first = nncc.compile(small_w4(), outputs=["logits"], optimizer=nncc.Adam(lr=0.01), batch_size=16)
    first.fit(epochs=2, batch_size=16, seed=5, **data)
    first.save(tmp_path / "epoch2.nncc")
    np.savez(tmp_path / "data.npz", **data)
    script = textwrap.dedent(f"""
        import numpy as np, nncc
        trainer = nncc.load({str(tmp_path / 'epoch2.nncc')!r})
        trainer.fit(epochs=1, batch_size=16, **dict(np.load({str(tmp_path / 'data.npz')!r})))
        np.savez({str(tmp_path / 'resumed.npz')!r}, **trainer.state_dict())
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    resumed = np.load(tmp_path / "resumed.npz")
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


# -- dropout ----------------------------------------------------------------------------------

def test_dropout_masks_are_identical_to_the_reference():
    """y = dropout(W), loss = sum((y - 1)^2): d loss / d W is exactly 0 where the mask dropped."""
    b = nncc.GraphBuilder()
    w = b.param("W", (64, 50), init="ones")
    t = b.param("target", (64, 50), init="zeros")
    b.mse_loss(b.dropout(w, p=0.3, name="drop"), t, name="loss", reduction="sum")
    trainer = nncc.compile(b.graph, outputs=[], optimizer=nncc.SGD(lr=0.0), batch_size=1, seed=11,
                           keep_grads=True)
    ref = nncc.testing.reference_for(trainer)
    for step in range(3):
        want = ref.gradients()["W"] != 0
        trainer.step()
        ref.step()
        got = trainer.grads["W"] != 0
        np.testing.assert_array_equal(got, want, err_msg=f"mask at step {step}")
        assert 0.6 < got.mean() < 0.8  # keeps ~70 %


def test_dropout_is_the_identity_in_eval_and_zero_p_changes_nothing():
    trainer = nncc.compile(small_w4(p=0.5), outputs=["drop", "logits"], batch_size=16)
    data = small_data(16)
    out = trainer.predict(**data)
    ref = nncc.testing.reference_for(trainer)
    np.testing.assert_allclose(out["drop"], np.maximum(ref.forward(**data)["ln"], 0), rtol=1e-5, atol=1e-6)


# -- normalisation vs torch -------------------------------------------------------------------

def torch_w4(trainer, data, steps, lr=0.01):
    torch = pytest.importorskip("torch")
    P = {k: torch.tensor(v.copy()) for k, v in trainer.params.items()}
    fc1 = torch.nn.Linear(12, 10)
    ln = torch.nn.LayerNorm(10, eps=1e-5)
    fc2 = torch.nn.Linear(10, 10, bias=False)
    bn = torch.nn.BatchNorm1d(10, eps=1e-5, momentum=0.1)
    head = torch.nn.Linear(10, 4)
    with torch.no_grad():
        fc1.weight.copy_(P["fc1.W"].T), fc1.bias.copy_(P["fc1.b"])
        ln.weight.copy_(P["ln.gain"]), ln.bias.copy_(P["ln.bias"])
        fc2.weight.copy_(P["fc2.W"].T)
        bn.weight.copy_(P["bn.gain"]), bn.bias.copy_(P["bn.bias"])
        head.weight.copy_(P["logits.W"].T), head.bias.copy_(P["logits.b"])
    net = torch.nn.Sequential(fc1, ln, torch.nn.ReLU(), torch.nn.Dropout(0.0), fc2, bn, torch.nn.ReLU(), head)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"].astype(np.int64))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return losses, net, bn, net(x).detach().numpy()


def test_w4_without_dropout_matches_torch_over_10_steps():
    trainer = nncc.compile(small_w4(p=0.0), outputs=["logits"], optimizer=nncc.SGD(lr=0.01), batch_size=32)
    data = small_data(32)
    want, net, bn, eval_logits = torch_w4(trainer, data, 10)
    got = [trainer.step(**data) for _ in range(10)]
    # float32 on both sides from the same start; reductions differ in order: ~1e-7 per op.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.buffers["bn.running_mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.buffers["bn.running_var"], bn.running_var.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.params["ln.gain"], net[1].weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trainer.predict(**data)["logits"], eval_logits, rtol=1e-4, atol=1e-5)


def test_w4_matches_the_reference_over_10_steps_masks_included():
    trainer = nncc.compile(small_w4(p=0.2), outputs=["logits"], optimizer=nncc.SGD(lr=0.05, momentum=0.9),
                           batch_size=32)
    nncc.testing.assert_matches_reference(trainer, small_data(32), steps=10)


def test_norms_expand_after_autodiff_and_the_backward_reads_the_forwards_normalised_input():
    """layer_norm and batch_norm become normalize(x) * gain + bias in the train step, under
    their own names; CSE leaves one normalize per norm, read by the forward and by the gain's
    gradient, and the values are those of the unexpanded graph (reference, float64)."""
    from nncc.compiler.interpreter import Interpreter
    from nncc.compiler.passes import differentiated_graph, eliminate_dead_code, optimized

    graph = small_w4(p=0.0)
    unexpanded = eliminate_dead_code(differentiated_graph(graph, "loss", ["logits"]))
    expanded = optimized(differentiated_graph(graph, "loss", ["logits"]))
    ops = [n.op for n in expanded]
    assert "layer_norm" not in ops and "batch_norm" not in ops
    assert ops.count("layer_normalize") == 1 and ops.count("batch_normalize") == 1
    for norm in ("ln", "bn"):
        assert expanded[norm].op == "add" and expanded[norm].inputs == (f"{norm}/scaled", f"{norm}.bias")
        readers = [n.name for n in expanded if f"{norm}/normalized" in n.inputs]
        assert readers == [f"{norm}/scaled", f"d{norm}/mul"]  # the forward's affine, the gain's gradient
    interp, data = Interpreter(graph, "loss", ["logits"]), small_data(16)
    before, after = interp.run(unexpanded, data), interp.run(expanded, data)
    for name in ("ln", "bn", "logits", "loss"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for param, grad in unexpanded.grads.items():
        np.testing.assert_array_equal(after[expanded.grads[param]], before[grad], err_msg=param)


def test_batch_norm_needs_two_rows_in_training():
    trainer = nncc.compile(small_w4(), outputs=["logits"], batch_size=16)
    with pytest.raises(FeedError, match=r"batch_norm 'bn' needs at least 2 rows"):
        trainer.step(**small_data(1))
    assert trainer.predict(**small_data(1))["logits"].shape == (1, 4)  # eval mode: running stats


# -- gradient accumulation --------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_k_accumulated_micro_batches_equal_one_batch_of_k_b(reduction):
    graph = classifier.model()
    graph.nodes["loss"]["reduction"] = reduction
    for node in ("h",):  # dropout too: micro-batches draw the masks of the big batch's rows
        graph.add_node("drop", op="dropout", p=0.25)
        for user in list(graph.successors(node)):
            arg = graph.edges[node, user]["arg"]
            graph.remove_edge(node, user)
            graph.add_edge("drop", user, arg=arg)
        graph.add_edge(node, "drop", arg=0)
    opt = nncc.SGD(lr=0.01, momentum=0.9)
    micro = nncc.compile(graph, outputs=["logits"], optimizer=opt, batch_size=8, accumulate=True)
    whole = nncc.compile(graph, outputs=["logits"], optimizer=opt, batch_size=32)
    data = classifier.data(rows=64)
    for step in range(2):
        rows = slice(32 * step, 32 * step + 32)
        losses = [micro.accumulate_gradients(**{k: v[rows][8 * i:8 * i + 8] for k, v in data.items()})
                  for i in range(4)]
        micro.apply_gradients()
        big = whole.step(**{k: v[rows] for k, v in data.items()})
        combined = np.mean(losses) if reduction == "mean" else np.sum(losses)
        np.testing.assert_allclose(combined, big, rtol=1e-5)
    for name, value in whole.params.items():
        # float32 sums in another order (4 partial sums of 8 rows vs one of 32): ~1e-7 relative.
        np.testing.assert_allclose(micro.params[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    assert micro.global_step == whole.global_step == 2


def test_apply_needs_accumulated_gradients_and_the_compile_flag():
    plain = nncc.compile(classifier.model(), outputs=["logits"], batch_size=8)
    with pytest.raises(RuntimeError, match="accumulate=True"):
        plain.accumulate_gradients(**classifier.data(rows=8))
    micro = nncc.compile(classifier.model(), outputs=["logits"], batch_size=8, accumulate=True)
    with pytest.raises(RuntimeError, match="no gradients accumulated"):
        micro.apply_gradients()


# -- kernels split over threads ----------------------------------------------------------------

def on_1_and_2_threads(run):
    """run() with the OpenMP team at 1 thread, then at 2; the team size is restored after."""
    import ctypes

    gomp = ctypes.CDLL("libgomp.so.1")
    before = gomp.omp_get_max_threads()
    try:
        results = []
        for threads in (1, 2):
            gomp.omp_set_num_threads(threads)
            results.append(run())
        return results
    finally:
        gomp.omp_set_num_threads(before)


def test_kernels_split_over_threads_give_the_same_bits_as_one_thread():
    """At 128 x 512 (past NNCC_PARALLEL_MIN_FLOATS) LayerNorm, BatchNorm, dropout and the
    elementwise loops run on the OpenMP team: each thread a contiguous range of rows or
    columns, so no value may depend on the thread count; and the model still matches the
    reference."""
    graph = norm_dropout.model(features=32, hidden=512, classes=4, p=0.2)
    data = norm_dropout.data(rows=128, features=32, classes=4)

    def run():
        trainer = nncc.compile(graph, outputs=["logits"], optimizer=nncc.SGD(lr=0.05, momentum=0.9), batch_size=128)
        losses = [trainer.step(**data) for _ in range(3)]
        return losses, trainer.state_dict(), trainer.predict(**data)["logits"]

    (losses1, state1, logits1), (losses2, state2, logits2) = on_1_and_2_threads(run)
    assert losses1 == losses2
    for name in state1:
        np.testing.assert_array_equal(state1[name], state2[name], err_msg=name)
    np.testing.assert_array_equal(logits1, logits2)
    trainer = nncc.compile(graph, outputs=["logits"], optimizer=nncc.SGD(lr=0.05, momentum=0.9), batch_size=128)
    nncc.testing.assert_matches_reference(trainer, data, steps=3)


def test_fit_gathers_batches_on_the_team_with_the_same_bits_as_one_thread():
    """784 features x 64 rows is past NNCC_PARALLEL_MIN_FLOATS: fit gathers the next batch on
    the threads that a step's one-thread kernels leave idle; the epoch must not depend on the
    thread count."""
    data = classifier.data(rows=400, seed=5)

    def run():
        trainer = nncc.compile(classifier.model(), outputs=["logits"], optimizer=nncc.SGD(lr=0.05), batch_size=64)
        history = trainer.fit(epochs=2, batch_size=64, seed=7, step_losses=True, **data)
        return history["step_loss"], trainer.state_dict()

    (steps1, state1), (steps2, state2) = on_1_and_2_threads(run)
    for epoch in range(2):
        np.testing.assert_array_equal(steps1[epoch], steps2[epoch])
    for name in state1:
        np.testing.assert_array_equal(state1[name], state2[name], err_msg=name)
    trainer = nncc.compile(classifier.model(), outputs=["logits"], optimizer=nncc.SGD(lr=0.05), batch_size=64)
    want = nncc.testing.reference_for(trainer).fit(epochs=2, batch_size=64, seed=7, step_losses=True, **data)
    for epoch in range(2):
        np.testing.assert_allclose(steps2[epoch], want["step_loss"][epoch], rtol=1e-4, atol=1e-6)


def test_steps_run_fits_one_thread_stretch_on_every_thread_with_the_same_bits():
    """step(), with no batch to gather, runs the kernels that fit gives one thread on every
    thread (a team segment: rows, shares, the loss on the first): the bits of one thread, for
    a full batch, a partial one (the second thread's rows short) and one too small to split;
    a bad label in the second thread's rows is reported by its row, and the next step trains."""
    data = classifier.data(rows=64, seed=3)

    def run():
        trainer = nncc.compile(classifier.model(), outputs=["logits"], optimizer=nncc.SGD(lr=0.05), batch_size=64)
        assert "step(): every thread" in trainer.source
        losses = [trainer.step(**{k: v[:rows] for k, v in data.items()}) for rows in (64, 64, 20, 5, 64)]
        bad = {k: v.copy() for k, v in data.items()}
        bad["y"][50] = 10
        with pytest.raises(FeedError, match=r"label 10 at row 50 "):
            trainer.step(**bad)
        losses.append(trainer.step(**data))
        return losses, trainer.state_dict()

    (losses1, state1), (losses2, state2) = on_1_and_2_threads(run)
    assert losses1 == losses2
    for name in state1:
        np.testing.assert_array_equal(state1[name], state2[name], err_msg=name)


def test_fit_trains_each_batch_as_step_does():
    """fit's double-buffered batches (the next gathered during a step) are the batches in
    order, the last one partial: bitwise the losses and weights of step() on slices."""
    data = classifier.data(rows=300, seed=2)
    fitted, stepped = (nncc.compile(classifier.model(), outputs=["logits"], optimizer=nncc.SGD(lr=0.05),
                                    batch_size=64) for _ in range(2))
    history = fitted.fit(epochs=2, batch_size=64, shuffle=False, step_losses=True, **data)
    for epoch in range(2):
        losses = [stepped.step(**{k: v[i:i + 64] for k, v in data.items()}) for i in range(0, 300, 64)]
        np.testing.assert_array_equal(history["step_loss"][epoch], np.array(losses, dtype=np.float32))
    for name, value in fitted.state_dict().items():
        if name != "nncc:epoch":  # step() counts no epochs
            np.testing.assert_array_equal(value, stepped.state_dict()[name], err_msg=name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_trains_instead_of_hanging():
    """GCC's OpenMP runtime hangs in a forked child of a process that ran threads (a
    `multiprocessing` worker): the child runs every kernel on one thread instead, and gets the
    bits the parent gets for the same step and the same epoch."""
    trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=64, seed=2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((256, 784), dtype=np.float32)
    y = rng.integers(0, 10, 256).astype(np.int32)
    trainer.step(x=x[:64], y=y[:64])  # the team's threads exist now
    state = trainer.state_dict()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one step and one epoch, their losses to the parent
        try:
            losses = [trainer.step(x=x[:64], y=y[:64]), trainer.fit(x=x, y=y, epochs=1, batch_size=64)["loss"][-1]]
            os.write(write, json.dumps(losses).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    child = json.loads(os.read(read, 4096).decode())
    os.close(read)
    trainer.load_state_dict(state)
    parent = [trainer.step(x=x[:64], y=y[:64]), trainer.fit(x=x, y=y, epochs=1, batch_size=64)["loss"][-1]]
    assert child == parent


def test_trainers_in_several_python_threads_do_not_interfere():
    """Each C call releases the GIL; trainers stepping at once in three threads (their own
    OpenMP teams, their own GEMM buffers) get the bits one trainer gets alone."""
    import threading

    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)

    def losses(out, k):
        trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=64, seed=1)
        out[k] = [trainer.step(x=x, y=y) for _ in range(30)]

    alone, together = {}, {}
    losses(alone, 0)
    threads = [threading.Thread(target=losses, args=(together, k)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[k] for k in range(3)] == [alone[0]] * 3
