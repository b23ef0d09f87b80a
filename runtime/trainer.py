"""The Trainer: owns the arena and drives the compiled library, one C call per step."""
from __future__ import annotations

import numpy as np

from nncc.compiler.errors import CheckpointError, FeedError
from nncc.compiler.init import initial_value
from nncc.compiler.ir import concrete
from nncc.compiler.ops import get_op
from nncc.compiler.schedules import runtime_fields, runtime_lr

from .feeds import gather

ALIGN_BYTES = 64
# Counters in a state_dict, beside the tensors named after their nodes ("nncc:" is a
# prefix no node name may take).
STEP_KEY, LR_KEY, SEED_KEY = "nncc:step", "nncc:lr", "nncc:seed"
EPOCH_KEY, SHUFFLE_SEED_KEY = "nncc:epoch", "nncc:shuffle_seed"
COUNTERS = {STEP_KEY: ("step", int, np.int64), LR_KEY: ("lr", float, np.float64),
            SEED_KEY: ("seed", int, np.uint64), EPOCH_KEY: ("epoch", int, np.int64),
            SHUFFLE_SEED_KEY: ("shuffle_seed", int, np.uint64)}


def _aligned_floats(count):
    """A zeroed float32 array whose data starts on a 64-byte boundary."""
    raw = np.zeros(count + ALIGN_BYTES // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % ALIGN_BYTES) // 4
    return raw[skip:skip + count]


class Trainer:
    """A compiled model: `step`, `predict`, live `params`, `state_dict`.

    Built by `nncc.compile`; see its docstring.
    """

    def __init__(self, program, ffi, lib, *, spec, report, seed):
        self.program = program
        self.spec = spec          # what compile() was given: graph, loss, outputs, optimizer...
        self.report = report
        self._ffi, self._lib = ffi, lib
        self.arena = _aligned_floats(max(program.arena_floats, 1))
        self._arena_ptr = ffi.cast("float *", self.arena.ctypes.data)
        self._rt = ffi.new("nncc_runtime *")
        self._rt.lr = spec.optimizer.lr
        self._rt.seed = self._rt.shuffle_seed = seed
        self.schedule = spec.optimizer.schedule
        train = program.train
        self._step_args = ArgumentCache(train.feeds)
        self.params = {p: self._view(p) for p in train.graph.params}
        self.buffers = {s: self._view(s) for s in train.graph.state}
        self._grads = {p: self._view(g) for p, g in train.graph.grads.items()} if spec.keep_grads else None
        for name in (*self.params, *self.buffers):
            self._view(name)[...] = initial_value(train.graph[name], seed)

    @property
    def grads(self) -> dict:
        """Views of each param's gradient from the last step (needs keep_grads=True)."""
        if self._grads is None:
            raise RuntimeError("gradients are not kept: compile with nncc.compile(..., keep_grads=True) to read "
                               "trainer.grads (without it they are temporaries, and an SGD step adds lr * "
                               "gradient into the weights inside the GEMM, never storing it)")
        return self._grads

    def _view(self, name):
        buf = self.program.train.buffers[name]
        shape = self.program.train.graph[name].shape
        return self.arena[buf.offset:buf.offset + int(np.prod(shape, dtype=np.int64))].reshape(shape)

    @property
    def source(self) -> str:
        """The generated C of this model."""
        return self.build.source

    @property
    def header(self) -> str:
        return self.build.header

    # -- run-time state ------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate of the next step (the schedule applied to the base rate).
        Assigning sets the base rate; the next step uses it, without a rebuild."""
        return runtime_lr(self._schedule, self._rt.lr, self._rt.step)

    @lr.setter
    def lr(self, value):
        self._rt.lr = float(value)

    @property
    def schedule(self):
        """The learning-rate schedule (an nncc.schedules object or None); assignable."""
        return self._schedule

    @schedule.setter
    def schedule(self, schedule):
        for field, value in runtime_fields(schedule).items():
            setattr(self._rt, field, value)
        self._schedule = schedule

    @property
    def global_step(self) -> int:
        return int(self._rt.step)

    @property
    def batch_size(self) -> int:
        return self.program.capacity

    # -- training and inference ----------------------------------------------------------
    def step(self, **feeds) -> float:
        """One train step (forward, backward, update) on 1..batch_size rows; returns the loss."""
        args = self._step_args.reuse(feeds)
        if args is None:  # a new set of arrays: check and convert them (the slow path)
            entry = self.program.train
            arrays, n = gather(entry.graph, entry.feeds, feeds, "step()", entry.graph.inputs)
            self._check_rows(n, entry, "step()")
            args = self._step_args.remember(feeds, arrays, n, self._pointers(arrays))
        code = self._lib.nncc_train_step(self._rt, self._arena_ptr, *args)
        if code:
            entry = self.program.train
            self._raise(entry, code, dict(zip(entry.feeds, self._step_args.arrays)))
        return float(self._rt.loss)

    def accumulate_gradients(self, **feeds) -> float:
        """Forward and backward on 1..batch_size rows, adding the gradients to those of the
        rows accumulated since the last `apply_gradients`; returns this batch's loss. Needs
        compile(..., accumulate=True)."""
        entry = self._accumulation_entry("accumulate")
        arrays, n = gather(entry.graph, entry.feeds, feeds, "accumulate_gradients()", self.program.train.graph.inputs)
        self._check_rows(n, entry, "accumulate_gradients()")
        code = self._lib.nncc_accumulate(self._rt, self._arena_ptr, n, *self._pointers(arrays))
        if code:
            self._raise(entry, code, dict(zip(entry.feeds, arrays)))
        return float(self._rt.loss)

    def apply_gradients(self):
        """One optimizer step with the gradient of all rows accumulated (for a mean loss:
        their mean), exactly as one step on a batch of all of them; then resets the sums."""
        self._accumulation_entry("apply")
        if self._rt.accumulated_rows == 0:
            raise RuntimeError("apply_gradients(): no gradients accumulated since the last apply")
        self._lib.nncc_apply(self._rt, self._arena_ptr)

    def _accumulation_entry(self, name):
        entry = getattr(self.program, name)
        if entry is None:
            raise RuntimeError("gradient accumulation was not compiled: use nncc.compile(..., accumulate=True)")
        return entry

    def _check_rows(self, n, entry, what):
        if not 1 <= n <= self.program.capacity:
            raise FeedError(f"{what} takes 1..{self.program.capacity} rows (the batch_size the trainer "
                            f"was compiled for), got {n}", feed=entry.feeds[0] if entry.feeds else None)

    def _pointers(self, arrays):
        return [self._ffi.from_buffer(_ctype(a), a) for a in arrays]

    def predict(self, **feeds) -> dict:
        """Eval-mode outputs for any number of rows: output name -> float32 array."""
        outs, _ = self._run_chunked(self.program.eval, feeds, "predict()")
        return outs

    def evaluate(self, **feeds) -> dict:
        """Eval-mode loss over any number of rows ("loss": the mean over rows for a mean
        loss), and "accuracy" when the loss takes class labels."""
        entry = self.program.evaluate
        outs, loss = self._run_chunked(entry, feeds, "evaluate()")
        result = {"loss": loss}
        loss_node = entry.graph[entry.loss]
        if get_op(loss_node.op).int_inputs and outs:
            labels = np.asarray(feeds[loss_node.inputs[get_op(loss_node.op).int_inputs[0]]])
            result["accuracy"] = float(np.mean(next(iter(outs.values())).argmax(axis=-1) == labels))
        return result

    def fit(self, epochs=1, batch_size=None, shuffle=True, seed=None, drop_last=False,
            validation_data=None, step_losses=False, verbose=False, **feeds) -> dict:
        """Train whole epochs in C; see runtime/fit.py. Returns the history dict."""
        from .fit import fit

        return fit(self, feeds, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                   drop_last=drop_last, validation_data=validation_data, step_losses=step_losses,
                   verbose=verbose)

    def _run_chunked(self, entry, feeds, what):
        """Run an eval-mode entry over all rows; returns (outputs, loss or None)."""
        arrays, n = gather(entry.graph, entry.feeds, feeds, what, self.program.train.graph.inputs)
        outs = {o: np.empty(concrete(entry.graph[o].shape, n), dtype=np.float32) for o in entry.outputs}
        args = self._pointers(arrays) + [self._ffi.from_buffer("float[]", outs[o]) for o in entry.outputs]
        loss = self._ffi.new("double *") if entry.loss else None
        code = getattr(self._lib, f"nncc_{entry.name}")(self._rt, self._arena_ptr, n, *args, *([loss] if loss else []))
        if code:
            self._raise(entry, code, dict(zip(entry.feeds, arrays)))
        return outs, (float(loss[0]) if loss else None)

    def _raise(self, entry, code, arrays):
        node = entry.graph[entry.errors[code - 1]]
        raise get_op(node.op).failure(entry.graph, node, int(self._rt.error_index), arrays)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Copies of params, optimizer/running state and counters (as torch's state_dict)."""
        out = {name: view.copy() for name, view in (*self.params.items(), *self.buffers.items())}
        for key, (field, _, dtype) in COUNTERS.items():
            out[key] = dtype(getattr(self._rt, field))
        return out

    def save(self, path):
        """Write a checkpoint atomically (temp file + rename); `nncc.load(path)` resumes it."""
        from .checkpoint import save

        save(self, path)

    def restore(self, path):
        """Load a checkpoint's state into this trainer; it must be of this model."""
        from .checkpoint import read

        payload = read(path)
        self.load_state_dict(payload["state"])
        self.schedule = payload["schedule"]

    def load_state_dict(self, state: dict):
        """Restore what `state_dict` returned; every array must fit its buffer exactly."""
        tensors = {**self.params, **self.buffers}
        missing = [k for k in tensors if k not in state]
        unknown = [k for k in state if k not in tensors and k not in COUNTERS]
        if missing or unknown:
            raise CheckpointError(f"state does not fit this model: missing {missing}, unexpected {unknown}")
        for name, view in tensors.items():
            value = np.asarray(state[name])
            if value.shape != view.shape:
                raise CheckpointError(f"{name!r}: shape {value.shape} in the state, {view.shape} in the model")
        for name, view in tensors.items():
            view[...] = state[name]
        for key, (field, kind, _) in COUNTERS.items():
            if key in state:
                setattr(self._rt, field, kind(state[key]))


class ArgumentCache:
    """The C arguments of the last call, reused while the caller passes the very same array
    objects (same shapes): a training loop over one batch buffer then pays no checks and
    no conversions, about 1 us less per step. We hold references, so the memory stays valid.
    """

    def __init__(self, names):
        self.names = names
        self.count, self.cached, self.arrays, self.args = -1, (), None, None

    def reuse(self, feeds):
        if len(feeds) != self.count:
            return None
        for name, array, shape in self.cached:  # (W1: 0.31 us for two feeds, a dict of them 0.45)
            if feeds.get(name) is not array or array.shape != shape:
                return None
        return self.args

    def remember(self, feeds, arrays, n, pointers):
        """Cache the arguments, unless a feed was converted (a copy would go stale)."""
        converted = any(feeds.get(name) is not array for name, array in zip(self.names, arrays))
        self.count = -1 if converted else len(feeds)
        self.cached = () if converted else tuple((name, array, array.shape) for name, array in feeds.items())
        self.arrays = arrays
        self.args = (n, *pointers)
        return self.args


def _ctype(array):
    return "int32_t[]" if array.dtype == np.int32 else "float[]"
