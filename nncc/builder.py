"""GraphBuilder: sugar that writes exactly the nx.DiGraph a user could write by hand."""
from __future__ import annotations

import networkx as nx

from nncc.compiler.ops import REGISTRY


class GraphBuilder:
    """Build a graph op by op; every method returns the new node's name.

    >>> b = GraphBuilder()
    >>> x = b.input("x", (None, 784)); y = b.input("y", (None,), dtype="int32")
    >>> h = b.relu(b.linear(x, 784, 128, name="fc1"))
    >>> b.softmax_cross_entropy(b.linear(h, 128, 10, name="fc2"), y, name="loss")
    >>> graph = b.graph
    """

    def __init__(self):
        self.graph = nx.DiGraph()
        self._count = {}

    def _name(self, op, name):
        if name is None:
            self._count[op] = self._count.get(op, 0) + 1
            name = f"{op}{self._count[op]}"
        if name in self.graph:
            raise ValueError(f"a node named {name!r} already exists")
        return name

    def input(self, name, shape, dtype="float32"):
        self.graph.add_node(self._name("input", name), op="input", shape=tuple(shape), dtype=dtype)
        return name

    def param(self, name, shape, init="uniform_fan_in", **attrs):
        self.graph.add_node(self._name("param", name), op="param", shape=tuple(shape), init=init, **attrs)
        return name

    def op(self, op, *inputs, name=None, **attrs):
        """Add a node of any registered op fed by `inputs` (in arg order)."""
        if op not in REGISTRY:
            raise ValueError(f"unknown op {op!r}")
        name = self._name(op, name)
        self.graph.add_node(name, op=op, **attrs)
        for slot, src in enumerate(inputs):
            if src not in self.graph:
                raise ValueError(f"{name!r}: input {src!r} is not a node of this graph")
            self.graph.add_edge(src, name, arg=slot)
        return name

    def linear(self, x, in_features, out_features, name, bias=True, init="uniform_fan_in"):
        """x @ W (+ b), initialised like torch.nn.Linear; params are <name>.W and <name>.b."""
        w = self.param(f"{name}.W", (in_features, out_features), init=init)
        out = self.op("matmul", x, w, name=f"{name}.matmul" if bias else name)
        if not bias:
            return out
        b = self.param(f"{name}.b", (out_features,), init=init, fan_in=in_features)
        return self.op("add", out, b, name=name)

    def __getattr__(self, op):
        if op.startswith("_") or op not in REGISTRY:
            raise AttributeError(op)
        return lambda *inputs, **attrs: self.op(op, *inputs, **attrs)
