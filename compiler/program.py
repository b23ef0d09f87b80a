"""A compiled program: the train and eval kernel lists over one planned arena.

This is what the emitter prints, the report describes and the Trainer drives.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph, numel
from .lower import lower
from .memory import plan_pinned, plan_program


@dataclass(frozen=True)
class Entry:
    """One C entry point: its kernels, feeds (in argument order), buffers and error sites."""

    name: str
    graph: Graph
    kernels: list
    pointers: dict
    buffers: dict        # node -> Buffer, pinned included
    feeds: tuple         # input node names, argument order
    errors: tuple        # node name of each can-fail kernel; error code k is errors[k-1]

    def used_buffers(self):
        """Buffers this entry touches, in arena order."""
        names = {n for k in self.kernels for n in (*k.reads, *k.writes)}
        return sorted((self.buffers[n] for n in names if n in self.buffers), key=lambda b: (b.offset, b.node))


@dataclass(frozen=True)
class Program:
    train: Entry
    eval: Entry
    capacity: int        # the batch size buffers are planned for
    arena_floats: int
    pinned_floats: int
    outputs: tuple
    loss: str

    def naive_floats(self):
        """What the arena would take without reuse: one buffer per planned value."""
        seen = {}
        for entry in (self.train, self.eval):
            for b in entry.buffers.values():
                seen[(entry.name if b.kind in ("temporary", "activation") else "", b.node)] = b.size
        return sum(seen.values())

    def bytes_by_kind(self):
        out = {}
        for entry in (self.train, self.eval):
            for b in entry.buffers.values():
                if b.kind in ("temporary", "activation") or entry is self.train:
                    key = b.kind if entry is self.train else f"eval {b.kind}"
                    out[key] = out.get(key, 0) + 4 * b.size
        return out


def make_program(train: Graph, eval_graph: Graph, capacity: int, fusion=True) -> Program:
    pinned, pinned_end = plan_pinned(train, capacity)
    train_keep = {train.loss}
    entries, top = {}, pinned_end
    for name, graph, keep in (("train", train, train_keep), ("eval", eval_graph, set(eval_graph.outputs))):
        must_store = keep | set(pinned)
        kernels, pointers = lower(graph, must_store, fusion=fusion, prefix=None if name == "train" else name)
        planned, end = plan_program(graph, kernels, pinned, pinned_end, capacity, keep)
        buffers = {**{k: v for k, v in pinned.items() if k in graph.nodes}, **planned}
        for node in graph:  # in-place writes land in their target's buffer
            if "writes" in node.attrs:
                buffers.pop(node.name, None)
        _check_in_place_order(graph, kernels)
        errors = tuple(k.nodes[0] for k in kernels if k.can_fail)
        feeds = tuple(i for i in graph.inputs if i in keep or any(i in k.reads for k in kernels))
        entries[name] = Entry(name, graph, kernels, pointers, buffers, feeds, errors)
        top = max(top, end)
    return Program(train=entries["train"], eval=entries["eval"], capacity=capacity, arena_floats=top,
                   pinned_floats=pinned_end, outputs=tuple(eval_graph.outputs), loss=train.loss)


def _check_in_place_order(graph, kernels):
    """An in-place write of X must follow every read of X's old value."""
    for k, kernel in enumerate(kernels):
        for name in kernel.writes:
            target = graph[name].attrs.get("writes")
            later = [n for later in kernels[k + 1:] for n in later.nodes if target in later.reads]
            if target and later:
                raise AssertionError(f"{name!r} overwrites {target!r} before {later[0]!r} reads it")


def row_size(graph, name):
    """Elements per batch row of an input or output."""
    return numel(graph[name].shape[1:])
