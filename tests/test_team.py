"""The team step: a train step of small GEMMs runs in one OpenMP parallel region (kernels
over the batch on each thread's rows, weight updates on each thread's share of the
weight's rows, the rest on the first thread, barriers from arena hazards).

It must train to exactly the bits of the serial step (team=False). Compiles are cached per
session, so a test that compiles a model the module already built costs only the lowering.
"""
import ctypes
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import nncc
from nncc import FeedError
from nncc.compiler.lower import Kernel, Loop, Operand
from nncc.compiler.threads import team_barriers
from nncc.testing import assert_matches_reference

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import classifier as w2  # noqa: E402
import norm_dropout  # noqa: E402  W4's layers
import regression  # noqa: E402  W1's model: 1 -> 64 -> 64 -> 1, tanh, MSE, a plain nx.DiGraph


@pytest.fixture(scope="module", autouse=True)
def at_least_two_threads():
    """Every team step here splits its rows over 2 threads at least, even on 1 core."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
    except OSError:
        yield
        return
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(max(before, 2))
    yield
    gomp.omp_set_num_threads(before)


def classifier_graph():
    """20 -> 64 -> 64 -> 10 relu, softmax cross-entropy on int32 labels."""
    b = nncc.GraphBuilder()
    x, y = b.input("x", (None, 20)), b.input("y", (None,), dtype="int32")
    h = b.relu(b.linear(x, 20, 64, name="fc1"), name="h1")
    h = b.relu(b.linear(h, 64, 64, name="fc2"), name="h2")
    b.softmax_cross_entropy(b.linear(h, 64, 10, name="logits"), y, name="loss", reduction="mean")
    return b.graph


def w1_data(rows, seed=0):
    x = np.random.default_rng(seed).uniform(-2, 2, size=(rows, 1)).astype(np.float32)
    return {"x": x, "target": np.sin(2 * x).astype(np.float32)}


def classifier_data(rows, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((rows, 20), dtype=np.float32), "y": rng.integers(0, 10, rows).astype(np.int32)}


# name -> (graph, output, batch size, data, optimizer): plain SGD (the update in the GEMM)
# and SGD with momentum (gradients stored, updates as loops over the params)
MODELS = {"w1": (regression.model, "z3", 32, w1_data, lambda: nncc.SGD(lr=0.05)),
          "classifier": (classifier_graph, "logits", 48, classifier_data, lambda: nncc.SGD(lr=0.05, momentum=0.9))}


def build(model, team, batch_size=None):
    graph, output, capacity, _, optimizer = MODELS[model]
    return nncc.compile(graph(), loss="loss", outputs=[output], optimizer=optimizer(),
                        batch_size=batch_size or capacity, seed=3, team=team)


def is_team_step(trainer):
    return trainer.program.train.team_barriers is not None


@pytest.mark.parametrize("model", MODELS)
def test_team_step_trains_bitwise_as_the_serial_step(model):
    team, serial = build(model, True), build(model, False)
    assert is_team_step(team) and not is_team_step(serial)
    capacity, data = MODELS[model][2], MODELS[model][3]
    for k, rows in enumerate([capacity, 7, 20, min(33, capacity - 1), 1, capacity]):
        feeds = data(rows, seed=k)
        assert team.step(**feeds) == serial.step(**feeds), f"loss of step {k} on {rows} rows"
        for name, value in serial.params.items():
            assert np.array_equal(team.params[name], value), f"{name} after step {k} on {rows} rows"
    assert_matches_reference(build(model, True), data(capacity if model == "w1" else 33, seed=9), steps=3)


def test_the_team_step_is_chosen_where_it_pays():
    w1 = build("w1", None)
    assert is_team_step(w1) and w1.program.team_rows == 16
    assert re.search(r"^  team step .* on each thread's rows \(at least 16 each\).*, 1 barrier$", str(w1.report), re.M)
    small = build("w1", None, batch_size=8)  # too few rows to give each thread 16
    assert not is_team_step(small) and small.program.team_rows == 0
    wide = nncc.compile(w2.model(), outputs=["logits"], batch_size=64)  # its 784 x 128 GEMMs take the team
    assert not is_team_step(wide)
    for trainer in (small, wide):
        assert "team step" not in str(trainer.report) and "train_team" not in trainer.source


def function_source(trainer, signature):
    source = trainer.source
    start = source.index(signature)
    return source[start:source.index("\n}\n", start)]


def test_w1_team_step_runs_the_batch_then_one_barrier_then_the_updates():
    trainer = build("w1", None)
    step = function_source(trainer, "static int train_step(")
    assert "nncc_team_run(train_team, &team, nncc_team_threads(n));" in step and "omp" not in step
    lines = function_source(trainer, "static void train_team(").splitlines()
    barriers = [i for i, line in enumerate(lines) if "nncc_team_barrier(threads);" in line]
    assert len(barriers) == 1
    on_rows = [i for i, line in enumerate(lines) if "row_hi - row_lo" in line]
    updates = [i for i, line in enumerate(lines) if "nncc_sgemm_update(" in line]
    assert len(on_rows) == 5 and max(on_rows) < barriers[0]  # forward 3, backward 2 GEMMs
    assert len(updates) == 3 and min(updates) > barriers[0]
    assert all("nncc_thread_share(" in lines[i] for i in updates)


# -- team_barriers on made-up kernels ------------------------------------------------------------

def fake_program(*kernels, spans=None):
    """team_barriers' arguments for kernels over a feed x (not in the arena), buffers h, g
    (batch rows, [n, 4]) and p, q, r (not); each buffer has its own 10 floats of arena, h at
    0, g at 10, p at 20, q at 30, r at 40, unless `spans` says otherwise."""
    graph = [SimpleNamespace(name=n, shape=("n", 4) if n in "xhg" else (4,), attrs={}) for n in "xhgpqr"]
    spans = {**{n: (10 * i, 10) for i, n in enumerate("hgpqr")}, **(spans or {})}
    buffers = {n: SimpleNamespace(offset=offset, size=size) for n, (offset, size) in spans.items()}
    return graph, list(kernels), {n: f"ptr_{n}" for n in "xhgpqr"}, buffers


def kernel(team, reads="", writes="", can_fail=False, loops=(), inputs=(), stores=(), split=None):
    return Kernel(name=f"{team}:{reads}->{writes}", nodes=(), reads=tuple(reads), writes=tuple(writes),
                  comment="", team=team, can_fail=can_fail, loops=list(loops), inputs=list(inputs),
                  stores=list(stores), split_columns=split)


def shared(reads, writes, extent="64"):
    """A loop kernel on its share of `extent` elements of each buffer (threads.py's 'share')."""
    return kernel("share", reads, writes, loops=[Loop("i0", "hi", "lo")],
                  inputs=[(Operand(n, f"ptr_{n}", "i0"), f"{n}_") for n in reads],
                  stores=[(Operand(n, f"ptr_{n}", "i0"), f"{n}_") for n in writes], split=extent)


def case(id, kernels, want, spans=None):
    return pytest.param(kernels, spans, want, id=id)


@pytest.mark.parametrize("kernels,spans,want", [
    # each thread reads back its own rows of a batch buffer
    case("own rows", [kernel("rows", "x", "h"), kernel("rows", "h", "g")], [False, False]),
    case("rows then first thread", [kernel("rows", "x", "h"), kernel("single", "h", "p")], [False, True]),
    # after that barrier a read of h clashes with nothing, a write does with the read before
    case("since the barrier", [kernel("rows", "x", "h"), kernel("single", "h", "p"), kernel("rows", "h", "g"),
                               kernel("rows", "g", "h")], [False, True, False, True]),
    case("first thread only", [kernel("single", "p", "q"), kernel("single", "q", "r"), kernel("single", "r", "p")],
         [False] * 3),
    case("reads only", [kernel("rows", "hp"), kernel("single", "hp"), kernel("rows", "p", "g")], [False] * 3),
    # r reuses memory of p, which another thread read before; right next to p it does not
    case("reused memory", [kernel("single", "p", "q"), kernel("rows", "h", "r")], [False, True],
         {"r": (25, 10), "q": (60, 10)}),
    case("just after", [kernel("single", "p", "q"), kernel("rows", "h", "r")], [False, False],
         {"r": (30, 10), "q": (60, 10)}),
    case("just before", [kernel("single", "p", "q"), kernel("rows", "h", "r")], [False, False], {"r": (15, 5)}),
    # one batch buffer's rows are not another's: h reuses g's memory
    case("reused rows", [kernel("rows", "g", "q"), kernel("rows", "x", "h")], [False, True], {"h": (10, 10)}),
    # after a kernel that can fail, always (the failure reaches every thread), once
    case("after a failure", [kernel("single", "p", "q", can_fail=True), kernel("rows", "h", "g"),
                             kernel("rows", "g", "h")], [False, True, False]),
    # loops on the same share of the same elements; another split (a GEMM's rows) needs one
    case("same share", [shared("p", "q"), shared("q", "r")], [False, False]),
    case("other share", [shared("p", "q"), shared("q", "r", extent="32")], [False, True]),
    case("share then GEMM rows", [shared("p", "q"), kernel("share", "q", "r")], [False, True]),
])
def test_barriers_stand_where_threads_share_arena_memory(kernels, spans, want):
    assert list(team_barriers(*fake_program(*kernels, spans=spans))) == want


# -- failures and fit -------------------------------------------------------------------------

def test_a_bad_label_on_another_threads_rows_fails_the_step_and_changes_nothing():
    team, serial = build("classifier", True), build("classifier", False)
    feeds = classifier_data(48)
    team.step(**feeds), serial.step(**feeds)
    before = {name: value.copy() for name, value in team.params.items()}
    bad = dict(feeds, y=feeds["y"].copy())
    bad["y"][30] = 10  # rows 24..47 are the second thread's
    with pytest.raises(FeedError, match=r"feed 'y': label 10 at row 30 is outside \[0, 10\)"):
        team.step(**bad)
    assert team.global_step == 1
    for name, value in before.items():
        np.testing.assert_array_equal(team.params[name], value, err_msg=name)
    for k in range(2):  # and it goes on with the bits of the serial step
        assert team.step(**classifier_data(40, seed=k)) == serial.step(**classifier_data(40, seed=k))
    for name, value in serial.state_dict().items():
        np.testing.assert_array_equal(team.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("model,team", [("w1", None), ("classifier", True)])
def test_fit_on_a_team_step_trains_each_batch_as_step_does(model, team):
    capacity, data = MODELS[model][2], MODELS[model][3](3 * MODELS[model][2] + 13, seed=2)
    fitted, stepped = build(model, team), build(model, team)
    assert is_team_step(fitted)
    rows = len(data["x"])
    history = fitted.fit(epochs=2, batch_size=capacity, shuffle=False, step_losses=True, **data)
    for epoch in range(2):
        losses = [stepped.step(**{k: v[i:i + capacity] for k, v in data.items()}) for i in range(0, rows, capacity)]
        np.testing.assert_array_equal(history["step_loss"][epoch], np.array(losses, dtype=np.float32))
    for name, value in fitted.state_dict().items():
        if name != "nncc:epoch":  # step() counts no epochs
            np.testing.assert_array_equal(value, stepped.state_dict()[name], err_msg=name)


# -- the team's helper threads (templates/kernels/team.c.j2) ----------------------------------

def test_helpers_that_fell_asleep_wake_for_the_next_step_and_two_callers_share_a_library():
    """Helpers spin ~0.5 ms after a step, then sleep: a step after a pause wakes them. Two
    trainers of one model share one library and its helpers: steps from two Python threads
    at once (cffi lets go of the GIL) must each train exactly as alone (the second caller
    runs its step on its own thread while the helpers are busy)."""
    import threading
    import time

    serial = build("w1", False)
    expected = [serial.step(**w1_data(32, seed=k)) for k in range(40)]
    first = build("w1", True)
    for k in range(3):
        assert first.step(**w1_data(32, seed=k)) == expected[k]
        time.sleep(0.02)  # the helpers sleep by now
    trainers, losses = [build("w1", True), build("w1", True)], [[], []]

    def train(index):
        losses[index] = [trainers[index].step(**w1_data(32, seed=k)) for k in range(40)]

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert losses == [expected, expected]
    for trainer in trainers:
        for name, value in serial.params.items():
            assert np.array_equal(trainer.params[name], value), name


HELPERS_SCRIPT = r"""
import ctypes, gc, os, sys, time
sys.path.insert(0, {tests!r})
import test_team as t
trainer = t.build("w1", True)
before = trainer.step(**t.w1_data(32))
pid = os.fork()
if pid == 0:  # the child has no helpers: it starts its own (libgomp says 1 thread there)
    ctypes.CDLL("libgomp.so.1").omp_set_num_threads(2)
    trainer.step(**t.w1_data(32, seed=1))
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
del trainer
gc.collect()  # the library may go: its helpers must stop first
time.sleep(0.05)
t.build("classifier", True).step(**t.classifier_data(48))
print("ok")
"""


def test_helpers_survive_fork_and_stop_with_their_library(tmp_path):
    import subprocess

    script = HELPERS_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_chosen_team_step_trains_the_same_bits_on_the_team_and_alone():
    """A team step nncc chose times itself (the first 8 calls on the team, the next 8 on the
    calling thread alone, then the faster): the same bits all along."""
    auto, serial = build("w1", None), build("w1", False)
    assert auto.program.team_auto and not build("w1", True).program.team_auto
    for k in range(40):
        assert auto.step(**w1_data(32, seed=k)) == serial.step(**w1_data(32, seed=k)), k
    for name, value in serial.params.items():
        assert np.array_equal(auto.params[name], value), name


def test_a_team_step_with_layer_norm_dropout_batch_norm_and_adam_trains_the_serial_bits():
    """W4's layers (examples/norm_dropout.py) at a small size: LayerNorm and BatchNorm run on
    the first thread, dropout's masks are drawn per element on any thread, Adam's moments
    and BatchNorm's running stats are updated on shares: the state after every step is
    bitwise the serial step's."""
    def build_small(team):
        return nncc.compile(norm_dropout.model(features=20, hidden=48), outputs=norm_dropout.outputs,
                            optimizer=nncc.Adam(lr=1e-3), batch_size=40, seed=5, team=team)

    team, serial = build_small(True), build_small(False)
    assert is_team_step(team)
    for k, rows in enumerate([40, 40, 23, 40]):
        feeds = classifier_data(rows, seed=k)
        assert team.step(**feeds) == serial.step(**feeds), k
        for name, value in serial.state_dict().items():
            np.testing.assert_array_equal(team.state_dict()[name], value, err_msg=f"{name} after step {k}")
    np.testing.assert_array_equal(team.predict(x=feeds["x"])["logits"], serial.predict(x=feeds["x"])["logits"])


RACES_SCRIPT = r"""
import ctypes, os, signal, sys, threading
sys.path.insert(0, {tests!r})
import numpy as np
import nncc
import test_team as t

def build(team):
    return nncc.compile(t.regression.model(), loss="loss", outputs=["z3"], optimizer=nncc.SGD(lr=0.01),
                        batch_size=64, seed=3, team=team)

team, serial, other = build(True), build(False), build(True)  # other: the same library and helpers
feeds = t.w1_data(64)
stop = False

def steps():
    while not stop:
        other.step(**feeds)

stepping = threading.Thread(target=steps)
stepping.start()
for trial in range(8):  # forks that catch the other thread in a step, now and then
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(2)
        serial.load_state_dict(team.state_dict())
        same = all(team.step(**feeds) == serial.step(**feeds) for _ in range(20))
        os._exit(0 if same and all(np.array_equal(team.params[n], v) for n, v in serial.params.items()) else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0, (trial, status)
stop = True
stepping.join()
x = np.random.default_rng(0).uniform(-2, 2, size=(4_000_000, 1)).astype(np.float32)
data = {{"x": x, "target": np.sin(2 * x)}}
threading.Thread(target=lambda: team.fit(epochs=100, batch_size=64, shuffle=False, **data), daemon=True).start()
print("ok", flush=True)  # and exit while the daemon thread is in fit: the destructor waits for its step
"""


def test_forks_and_exits_in_the_middle_of_other_threads_steps_neither_hang_nor_differ():
    """With 3 threads: a child forked while another thread runs a team step starts with a
    clean barrier; the process exits while a daemon thread is in fit (the library's
    destructor waits for the step in flight, then stops the helpers)."""
    import os
    import subprocess

    script = RACES_SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "3"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
