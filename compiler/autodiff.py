"""Reverse-mode autodiff: derive the backward graph symbolically, as nodes of registered ops.

One sweep over the forward nodes in reverse topological order. Each node's gradient is the
sum of its consumers' contributions (fan-out); each op's `grad` rule builds the
contributions to its inputs; broadcasting is undone here, once, by `sum_to`. The work is
linear in the number of edges.
"""
from __future__ import annotations

from .errors import GraphError
from .ir import BACKWARD, Graph, NameAllocator, Node
from .ops import SOURCE, get_op


class GradBuilder:
    """What a gradient rule sees: `op` adds a node of a registered op, `shape` reads one."""

    def __init__(self, graph: Graph, phase=BACKWARD):
        self.nodes = dict(graph.nodes)
        self.new = []
        self.names = NameAllocator(self.nodes)
        self.phase = phase
        self.prefix = "d"

    def shape(self, name):
        return self.nodes[name].shape

    def op(self, op_name, *inputs, name=None, **attrs) -> str:
        opdef = get_op(op_name)
        full = {**opdef.attrs, **attrs}  # `writes` (an in-place target) rides along
        node = Node(name=self.names(name or f"{self.prefix}/{op_name}"), op=op_name,
                    inputs=tuple(inputs), attrs=full, phase=self.phase)
        srcs = [self.nodes[i] for i in inputs]
        node = node.replace(shape=tuple(opdef.shape(node, [s.shape for s in srcs])),
                            dtype=opdef.output_dtype(node, [s.dtype for s in srcs]))
        self.nodes[node.name] = node
        self.new.append(node)
        return node.name


def differentiate(graph: Graph) -> Graph:
    """Append d loss / d x for every x between the params and the loss; fill `grads`."""
    needs = graph.ancestors([graph.loss]) & _descendants(graph, graph.params)
    b = GradBuilder(graph)
    contributions = {graph.loss: [b.op("constant", name=f"grad({graph.loss})", value=1.0, shape=())]}
    grads = {}
    for node in reversed(list(graph)):
        if node.name not in needs or node.name not in contributions:
            continue
        b.prefix = f"d{node.name}"
        gy = _total(b, node.name, contributions.pop(node.name))
        opdef = get_op(node.op)
        if opdef.kind == SOURCE:
            if node.op == "param":
                grads[node.name] = gy
            continue
        if opdef.grad is None:
            raise GraphError(f"op {node.op!r} has no gradient, but the loss depends on params through it",
                             node=node.name)
        for src, g in zip(node.inputs, opdef.grad(b, node, gy)):
            if g is None or src not in needs:
                continue
            if b.shape(g) != graph[src].shape:
                g = b.op("sum_to", g, shape=graph[src].shape)
            contributions.setdefault(src, []).append(g)
    return graph.replace(nodes=b.nodes, grads=grads)


def _total(b: GradBuilder, name, parts):
    """Sum of the gradient contributions reaching `name` (several when it fans out)."""
    total = parts[0]
    for k, part in enumerate(parts[1:], start=1):
        last = k == len(parts) - 1
        total = b.op("add", total, part, name=f"grad({name})" if last else None)
    return total


def _descendants(graph: Graph, roots):
    users = graph.consumers()
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(users[name])
    return seen
