"""Elementwise fusion: decide which nodes share one C loop.

Walking the program backwards, every elementwise or reduce node not yet placed roots a
group and pulls in producers that only it consumes and that have its iteration shape;
the absorbed values stay in registers and never touch memory. Scalar constants are
inlined into every loop that reads them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph
from .ops import ELEMENTWISE, REDUCE, SOURCE, get_op


@dataclass(frozen=True)
class Group:
    """Nodes computed by one loop kernel (in order); `root` is the last, its output.

    `head`, when set, is a matmul whose only consumer is this loop: the loop becomes the
    GEMM's epilogue, run on each block of the product while it is still in cache, and the
    product is never stored on its own (the GEMM writes into the root's buffer).
    """

    nodes: tuple
    head: str | None = None

    @property
    def root(self):
        return self.nodes[-1]


def is_loop_op(node) -> bool:
    return get_op(node.op).kind in (ELEMENTWISE, REDUCE)


def is_inlined_constant(node) -> bool:
    return node.op == "constant" and node.shape == ()


def iteration_shape(graph: Graph, node):
    """A loop kernel runs over its root's shape, or for a reduction over its input's."""
    return graph[node.inputs[0]].shape if get_op(node.op).kind == REDUCE else node.shape


def fuse_elementwise(graph: Graph, keep, enabled=True):
    """Group the loop ops of `graph`; `keep` are nodes that must be materialised anyway.

    Returns name -> Group for every loop op (absorbed nodes map to their group too).
    """
    users = graph.consumers()
    group_of = {}
    for node in reversed(list(graph)):
        if node.name in group_of or not is_loop_op(node):
            continue
        if is_inlined_constant(node) and all(is_loop_op(graph[u]) for u in users[node.name]):
            continue  # folded into the expressions that read it
        members = [node.name]
        if enabled:
            _absorb(graph, node, iteration_shape(graph, node), users, keep, members, group_of)
        order = [n.name for n in graph if n.name in set(members)]
        head = _epilogue_head(graph, order, users, keep) if enabled else None
        group = Group(tuple(order), head)
        for name in order + ([head] if head else []):
            group_of[name] = group
    return group_of


def _epilogue_head(graph, members, users, keep):
    """A matmul the loop can finish as an epilogue: its only consumer is in the loop, and
    the loop runs over the product's own 2-D shape. The product may still have to be kept
    (a param's gradient, which the loop then applies as the update while it is in cache)."""
    root = graph[members[-1]]
    if get_op(root.op).kind == REDUCE or len(root.shape) != 2:
        return None
    for name in members:
        for src in graph[name].inputs:
            producer = graph[src]
            if (get_op(producer.op).takes_epilogue and set(users[src]) == {name}
                    and producer.shape == root.shape and not _overwritten_before(graph, src, root.name)):
                return src
    return None


def _overwritten_before(graph, head, root):
    """Whether an in-place write between the matmul and the loop's root changes one of the
    matmul's operands: the fused GEMM runs at the root's place, and would read it too late."""
    order = list(graph.nodes)
    between = order[order.index(head) + 1:order.index(root)]
    return any(graph[n].attrs.get("writes") in graph[head].inputs for n in between)


def product_in_place(graph, group, keep):
    """Whether the GEMM of an epilogue group writes its product into the loop's output
    buffer (the product is not needed on its own), or into a buffer of its own."""
    return group.head not in keep and "writes" not in graph[group.root].attrs


def _absorb(graph, node, shape, users, keep, members, group_of):
    for src in node.inputs:
        producer = graph[src]
        if (src in members or src in group_of or src in keep or not is_loop_op(producer)
                or get_op(producer.op).kind == REDUCE or is_inlined_constant(producer)
                or get_op(producer.op).kind == SOURCE or len(set(users[src])) != 1
                or producer.shape != shape or "writes" in producer.attrs):
            continue
        members.append(src)
        _absorb(graph, producer, shape, users, keep, members, group_of)
