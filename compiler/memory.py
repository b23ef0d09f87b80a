"""Memory planning: every buffer gets an offset in one flat float arena.

Params, their grads and optimizer/running state are pinned (they persist or are read
after the step). Every other buffer lives from the kernel that writes it to the last
kernel that reads it, across forward, backward and update together; buffers whose
lifetimes are disjoint share memory (first fit, in order of definition).
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import numel

ALIGN = 16  # floats: 64-byte alignment, one cache line / one AVX-512 vector


def aligned(count):
    return (count + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Buffer:
    node: str
    offset: int    # in floats from the arena base
    size: int      # in floats, for the planned batch capacity
    kind: str      # "param", "state", "grad", "activation" (lives into backward), "temporary"
    start: int     # first kernel index (-1: before the program)
    end: int       # last kernel index reading it (len(kernels): after the program)


def plan_pinned(graph, capacity, more_state=(), grads=True):
    """Params, state (the graph's and `more_state`: (name, node) of other entries' state)
    and, if `grads`, the params' gradients at fixed offsets from 0; returns (buffers, end
    offset)."""
    buffers, offset = {}, 0
    nodes = {**dict(more_state), **graph.nodes}
    state = list(graph.state) + [name for name, _ in more_state if name not in graph.state]
    pinned_grads = sorted(set(graph.grads.values())) if grads else []
    for kind, names in (("param", graph.params), ("state", state), ("grad", pinned_grads)):
        for name in names:
            size = aligned(numel(nodes[name].shape, capacity))
            buffers[name] = Buffer(name, offset, size, kind, -1, 1 << 60)
            offset += size
    return buffers, offset


def plan_program(graph, kernels, pinned, base, capacity, keep):
    """Offsets for every buffer `kernels` write that is not pinned, starting at `base`.

    `keep`: names read after the program ends (the loss, outputs). Returns (buffers, end).
    """
    start, end = {}, {}
    for k, kernel in enumerate(kernels):
        for name in kernel.writes:
            start.setdefault(name, k)
            end[name] = max(end.get(name, k), k)
        for name in kernel.reads:
            end[name] = max(end.get(name, k), k)
    backward_start = next((k for k, kern in enumerate(kernels)
                           if any(graph[n].phase != "forward" for n in kern.nodes)), len(kernels))
    placed, buffers = [], {}
    for name in sorted(start, key=lambda n: start[n]):
        if name in pinned or "writes" in graph[name].attrs:  # in-place writes reuse their target
            continue
        if name in keep:
            end[name] = len(kernels)
        size = aligned(numel(graph[name].shape, capacity))
        live = sorted((b for b in placed if b.end >= start[name] and b.start <= end[name]),
                      key=lambda b: b.offset)
        offset = base
        for other in live:
            if offset + size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        kind = "activation" if start[name] < backward_start <= end[name] else "temporary"
        buf = Buffer(name, offset, size, kind, start[name], end[name])
        placed.append(buf)
        buffers[name] = buf
    top = max((b.offset + b.size for b in placed), default=base)
    return buffers, top


def overlapping_live_buffers(buffers):
    """Pairs of buffers that are live at the same time and share memory (must be empty)."""
    items = list(buffers)
    bad = []
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            live_together = a.start <= b.end and b.start <= a.end
            share = a.offset < b.offset + b.size and b.offset < a.offset + a.size
            if live_together and share:
                bad.append((a.node, b.node))
    return bad
