"""The graph IR every pass reads and writes.

A `Graph` is an immutable, topologically ordered collection of `Node`s. Passes take a
graph and return a new one (`Graph.replace`), never mutating their input.

Shapes are tuples whose entries are ints or the batch symbol `BATCH` ("n"): the number
of rows of the current call, a run-time value in the emitted C.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

BATCH = "n"

# Phases of the train program, in execution order.
FORWARD, BACKWARD, UPDATE = "forward", "backward", "update"


def freeze(attrs: Mapping) -> Mapping:
    return MappingProxyType(dict(attrs))


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple = ()
    attrs: Mapping = field(default_factory=lambda: freeze({}))
    shape: tuple | None = None
    dtype: str = "float32"
    phase: str = FORWARD

    def replace(self, **changes) -> "Node":
        if "attrs" in changes:
            changes["attrs"] = freeze(changes["attrs"])
        return dataclasses.replace(self, **changes)

    def attr(self, key, default=None):
        return self.attrs.get(key, default)


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order plus what the program is for.

    loss: name of the scalar loss node (None for an inference-only graph)
    outputs: names the user reads back
    params: trainable param node names, in declaration order
    inputs: input (feed) node names, in declaration order
    state: persistent non-trainable buffers (optimizer moments, running stats)
    grads: param name -> node holding d loss / d param (after autodiff)
    """

    nodes: Mapping[str, Node]
    loss: str | None = None
    outputs: tuple = ()
    params: tuple = ()
    inputs: tuple = ()
    state: tuple = ()
    grads: Mapping = field(default_factory=lambda: freeze({}))

    def __post_init__(self):
        object.__setattr__(self, "nodes", freeze(self.nodes))
        object.__setattr__(self, "grads", freeze(self.grads))

    def __getitem__(self, name) -> Node:
        return self.nodes[name]

    def __contains__(self, name) -> bool:
        return name in self.nodes

    def __iter__(self):
        return iter(self.nodes.values())

    def __len__(self):
        return len(self.nodes)

    def replace(self, **changes) -> "Graph":
        return dataclasses.replace(self, **changes)

    def with_nodes(self, nodes) -> "Graph":
        return self.replace(nodes={n.name: n for n in nodes})

    def consumers(self) -> dict:
        """name -> list of names of nodes reading it."""
        users = {name: [] for name in self.nodes}
        for node in self:
            for src in node.inputs:
                users[src].append(node.name)
        return users

    def ancestors(self, names) -> set:
        """`names` and every node they depend on."""
        seen, stack = set(), list(names)
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.nodes[name].inputs)
        return seen


class NameAllocator:
    """Hands out node names not yet used in a graph."""

    def __init__(self, taken):
        self.taken = set(taken)

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}#{k}"
        self.taken.add(name)
        return name


def numel(shape, n=None):
    """Element count; with n=None returns a C expression string when BATCH occurs."""
    count, symbolic = 1, False
    for d in shape:
        if d == BATCH:
            if n is None:
                symbolic = True
            else:
                count *= n
        else:
            count *= d
    if symbolic:
        return f"n * {count}" if count != 1 else "n"
    return count


def concrete(shape, n):
    return tuple(n if d == BATCH else d for d in shape)
