"""A compiled program: the train and eval kernel lists over one planned arena.

This is what the emitter prints, the report describes and the Trainer drives.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph, numel
from .lower import PARALLEL_MIN_FLOATS, lower
from .memory import aligned, plan_pinned, plan_program
from .threads import TEAM_MIN_ROWS, gather_team_rows, lengthen_alone_run, team_barriers, team_pays, team_segment


@dataclass(frozen=True)
class Entry:
    """One C entry point: its kernels, feeds (in argument order), buffers and error sites.

    `outputs` are copied out to the caller per chunk of rows; `loss`, when set, is summed
    over the chunks (eval-mode evaluation).
    """

    name: str
    graph: Graph
    kernels: list
    pointers: dict
    buffers: dict        # node -> Buffer, pinned included
    feeds: tuple         # input node names, argument order
    errors: tuple        # node name of each can-fail kernel; error code k is errors[k-1]
    outputs: tuple = ()
    loss: str | None = None
    # a team step (compiler/threads.py): per kernel, whether a barrier goes before it
    team_barriers: tuple | None = None
    # step()'s team segment (compiler/threads.py): the team's versions of the kernels of the
    # run that fit gives one thread, and per kernel whether a barrier goes before it
    segment: tuple | None = None
    segment_barriers: tuple | None = None

    def used_buffers(self):
        """Buffers this entry touches, in arena order."""
        names = {n for k in self.kernels for n in (*k.reads, *k.writes)} | set(self.outputs)
        return sorted((self.buffers[n] for n in names if n in self.buffers), key=lambda b: (b.offset, b.node))


@dataclass(frozen=True)
class Program:
    train: Entry
    eval: Entry
    evaluate: Entry      # eval mode with the loss: validation loss and accuracy
    accumulate: Entry | None   # gradient accumulation (compile(..., accumulate=True))
    apply: Entry | None
    capacity: int        # the batch size buffers are planned for
    arena_floats: int
    pinned_floats: int
    # train feed -> arena offsets of its batch staging buffers (fit): two where fit gathers
    # the next batch during a step (gather_overlaps), else one
    staging: dict
    outputs: tuple
    loss: str
    team_rows: int = 0   # a team step's fewest rows per thread (its unit of rows); 0: none
    team_auto: bool = False  # chosen where it pays: it also times itself against one thread

    @property
    def entries(self):
        return tuple(e for e in (self.train, self.eval, self.evaluate, self.accumulate, self.apply) if e)

    def naive_floats(self):
        """What the arena would take without reuse: one buffer per planned value."""
        seen = {}
        for entry in self.entries:
            for b in entry.buffers.values():
                seen[(entry.name if b.kind in ("temporary", "activation") else "", b.node)] = b.size
        return sum(seen.values()) + self._staging_floats()

    def bytes_by_kind(self):
        out = {}
        for entry in self.entries:
            for b in entry.buffers.values():
                if b.kind in ("temporary", "activation") or entry is self.train:
                    key = b.kind if entry is self.train else f"{entry.name} {b.kind}"
                    out[key] = out.get(key, 0) + 4 * b.size
        out["fit staging"] = 4 * self._staging_floats()
        return out

    def _staging_floats(self):
        return sum(len(offsets) * _staging_size(self.train.graph, f, self.capacity)
                   for f, offsets in self.staging.items())

    @property
    def gather_overlaps(self):
        """Whether fit's batches are big enough to gather on the team and the step is not a
        team step: then the threads that a step leaves idle gather the next batch into the
        other staging buffers."""
        return _gather_overlaps(self.train.graph, self.capacity) and self.train.team_barriers is None


def _staging_size(graph, feed, capacity):
    return aligned(capacity * row_size(graph, feed))


def _gather_overlaps(graph, capacity):
    return capacity * sum(row_size(graph, f) for f in graph.inputs) >= PARALLEL_MIN_FLOATS


def make_program(train: Graph, eval_graph: Graph, evaluate_graph: Graph, capacity: int, fusion=True,
                 accumulation=None, keep_grads=False, team=None) -> Program:
    """Lower and plan every entry. `accumulation`: (accumulate, apply) graphs, or None;
    `keep_grads`: pin the params' gradients (else they are temporaries like any other);
    `team`: make the train step a team step (compiler/threads.py) where it pays (None),
    always (True, down to one row per thread) or never (False)."""
    accumulate, apply = accumulation or (None, None)
    extra_state = [(s, accumulate[s]) for s in accumulate.state] if accumulate else []
    pinned, top = plan_pinned(train, capacity, extra_state, keep_grads)
    team_is_auto = team is None
    if team_is_auto:
        team = team_pays(train, lower(train, {train.loss} | set(pinned), fusion=fusion, capacity=capacity)[0],
                         capacity)
    overlaps = _gather_overlaps(train, capacity) and not team
    staging = {}
    for feed in train.inputs:
        size, copies = _staging_size(train, feed, capacity), 2 if overlaps else 1
        staging[feed] = tuple(top + i * size for i in range(copies))
        top += copies * size
    pinned_end = top
    entries = {}
    specs = (("train", train, (), train.loss),
             ("eval", eval_graph, eval_graph.outputs, None),
             ("evaluate", evaluate_graph, evaluate_graph.outputs, evaluate_graph.loss))
    if accumulation:
        specs += (("accumulate", accumulate, (), accumulate.loss), ("apply", apply, (), None))
    for name, graph, outputs, loss in specs:
        keep = set(outputs) | ({loss} if loss else set())
        prefix = None if name == "train" else name
        kernels, pointers = lower(graph, keep | set(pinned), fusion=fusion, prefix=prefix, capacity=capacity,
                                  team=team and name == "train")
        if name == "train" and overlaps:
            kernels = lengthen_alone_run(graph, kernels)
        if name == "train" and team:
            kernels = gather_team_rows(graph, kernels)
        planned, end = plan_program(graph, kernels, pinned, pinned_end, capacity, keep)
        buffers = {**{k: v for k, v in pinned.items() if k in graph.nodes}, **planned}
        for node in graph:  # in-place writes land in their target's buffer
            if "writes" in node.attrs:
                buffers.pop(node.name, None)
        _check_in_place_order(graph, kernels)
        errors = tuple(k.nodes[0] for k in kernels if k.can_fail)
        feeds = tuple(i for i in graph.inputs if i in keep or any(i in k.reads for k in kernels))
        barriers = team_barriers(graph, kernels, pointers, buffers) if team and name == "train" else None
        segment = segment_barriers = None
        if name == "train" and overlaps:
            segment = team_segment(kernels, lower(graph, keep | set(pinned), fusion=fusion, prefix="segment",
                                                         capacity=capacity, team=True)[0])
            segment_barriers = segment and team_barriers(graph, segment, pointers, buffers)
        entries[name] = Entry(name, graph, kernels, pointers, buffers, feeds, errors, tuple(outputs),
                              loss if name in ("eval", "evaluate") else None, barriers, segment, segment_barriers)
        top = max(top, end)
    return Program(train=entries["train"], eval=entries["eval"], evaluate=entries["evaluate"],
                   accumulate=entries.get("accumulate"), apply=entries.get("apply"),
                   capacity=capacity, arena_floats=top, pinned_floats=pinned_end, staging=staging,
                   outputs=tuple(eval_graph.outputs), loss=train.loss,
                   team_rows=(TEAM_MIN_ROWS if team_is_auto else 1) if team else 0,
                   team_auto=bool(team) and team_is_auto)


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
