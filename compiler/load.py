"""The first stages: read the user's NetworkX graph into the IR, validate it, infer shapes.

Every error names the node (and edge) at fault and says what is wrong.
"""
from __future__ import annotations

import warnings

import networkx as nx
import numpy as np

from .errors import GraphError
from .ir import BATCH, Graph, Node
from .ops import REQUIRED, SOURCE, get_op
from .ops.registry import format_shape

FEED_DTYPES = ("float32", "int32")


def load(graph, loss=None, outputs=None) -> Graph:
    """nx.DiGraph -> IR Graph (topologically ordered, attributes defaulted, shapes unset)."""
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        raise GraphError(f"expected a networkx.DiGraph, got {type(graph).__name__}")
    if graph.number_of_nodes() == 0:
        raise GraphError("the graph is empty")
    for name in graph.nodes:
        if not isinstance(name, str):
            raise GraphError(f"node names must be strings (they name feeds and params), got {name!r}")
        if name.startswith("nncc:"):
            raise GraphError("the prefix 'nncc:' is reserved for trainer counters in state_dict()", node=name)
    _check_acyclic(graph)
    nodes = [_load_node(graph, name) for name in nx.topological_sort(graph)]
    inputs = tuple(n.name for n in nodes if n.op == "input")
    params = tuple(n.name for n in nodes if n.op == "param")
    for name in ([loss] if loss is not None else []) + list(outputs or []):
        if name not in graph:
            raise GraphError(f"no node named {name!r} in the graph (it was named as the loss or an output)")
    if outputs is None:
        outputs = [] if loss is None else [u for u in _ordered_inputs(graph, loss) if graph.nodes[u].get("op") != "input"]
    return Graph(nodes={n.name: n for n in nodes}, loss=loss, outputs=tuple(outputs),
                 params=params, inputs=inputs)


def _check_acyclic(graph):
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
    raise GraphError(f"the graph has a cycle: {path}", node=cycle[0][0], edge=cycle[0][:2])


def _ordered_inputs(graph, name):
    """Input node names of `name` ordered by their edge's `arg` slot (checked)."""
    attrs = graph.nodes[name]
    opdef = get_op(attrs.get("op"), node=name)
    slots = {}
    for src in graph.predecessors(name):
        edge = (src, name)
        arg = graph.edges[edge].get("arg")
        if arg is None:
            if opdef.arity != 1:
                raise GraphError(f"edge has no 'arg' attribute saying which input slot of "
                                 f"{opdef.name!r} (0..{opdef.arity - 1}) it feeds", node=name, edge=edge)
            arg = 0
        if not isinstance(arg, (int, np.integer)) or isinstance(arg, bool):
            raise GraphError(f"'arg' must be an int, got {arg!r}", node=name, edge=edge)
        if not 0 <= arg < max(opdef.arity, 1) or opdef.arity == 0:
            raise GraphError(f"'arg'={arg} is out of range: {opdef.name!r} takes {opdef.arity} input(s)",
                             node=name, edge=edge)
        if arg in slots:
            raise GraphError(f"two edges feed input slot {arg} ({slots[arg]!r} and {src!r})",
                             node=name, edge=edge)
        slots[int(arg)] = src
    missing = [i for i in range(opdef.arity) if i not in slots]
    if missing:
        raise GraphError(f"{opdef.name!r} takes {opdef.arity} input(s); input slot(s) {missing} have no edge",
                         node=name)
    return [slots[i] for i in range(opdef.arity)]


def _load_node(graph, name) -> Node:
    raw = dict(graph.nodes[name])
    if "op" not in raw:
        raise GraphError("has no 'op' attribute", node=name)
    opdef = get_op(raw.pop("op"), node=name)
    attrs = {}
    for key, default in opdef.attrs.items():
        if key in raw:
            attrs[key] = raw.pop(key)
        elif default is REQUIRED:
            raise GraphError(f"op {opdef.name!r} needs the attribute {key!r}", node=name)
        else:
            attrs[key] = default
    if raw:
        warnings.warn(f"node {name!r}: attribute(s) {sorted(raw)} are not used by op {opdef.name!r} "
                      f"(it takes {sorted(opdef.attrs) or 'none'})", stacklevel=3)
    if opdef.kind == SOURCE:
        attrs["shape"] = _source_shape(name, opdef.name, attrs["shape"])
    if opdef.name == "input" and attrs["dtype"] not in FEED_DTYPES:
        raise GraphError(f"dtype must be one of {FEED_DTYPES}, got {attrs['dtype']!r}", node=name)
    return Node(name=name, op=opdef.name, inputs=tuple(_ordered_inputs(graph, name)), attrs=attrs,
                dtype=attrs.get("dtype", "float32"))


def _source_shape(name, op, shape):
    try:
        dims = tuple(shape)
    except TypeError:
        raise GraphError(f"'shape' must be a tuple, got {shape!r}", node=name) from None
    if op == "input":
        if not dims or dims[0] is not None or any(d is None for d in dims[1:]):
            raise GraphError(f"an input's shape has None as its first (batch) dimension and only "
                             f"there, e.g. (None, 784); got {shape!r}", node=name)
        dims = (BATCH,) + dims[1:]
    static = dims[1:] if op == "input" else dims
    for d in static:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
            raise GraphError(f"shape dimensions must be positive ints, got {shape!r}", node=name)
    return tuple(d if d == BATCH else int(d) for d in dims)


def infer_shapes(graph: Graph) -> Graph:
    """Set every node's shape and dtype from its op's rule; check input dtypes."""
    out = {}
    for node in graph:
        opdef = get_op(node.op, node=node.name)
        srcs = [out[s] for s in node.inputs]
        for slot, src in enumerate(srcs):
            want = "int32" if slot in opdef.int_inputs else "float32"
            if src.dtype != want:
                raise GraphError(f"input slot {slot} of {node.op!r} takes {want}, but {src.name!r} is {src.dtype}",
                                 node=node.name, edge=(src.name, node.name))
        shape = opdef.shape(node, [s.shape for s in srcs])
        dtype = opdef.output_dtype(node, [s.dtype for s in srcs])
        out[node.name] = node.replace(shape=tuple(shape), dtype=dtype)
    return graph.replace(nodes=out)


def validate_training(graph: Graph) -> Graph:
    """The loss is a scalar that every param reaches."""
    if graph.loss is None:
        raise GraphError("no loss node given: pass loss=<node name> (default 'loss')")
    loss = graph[graph.loss]
    if loss.shape != ():
        raise GraphError(f"the loss must be a scalar, but its shape is {format_shape(loss.shape)} "
                         f"(use a loss op, or reduction='mean'/'sum')", node=loss.name)
    reaching = graph.ancestors([graph.loss])
    for p in graph.params:
        if p not in reaching:
            raise GraphError(f"param has no path to the loss {graph.loss!r}, so it can't be trained", node=p)
    if not graph.params:
        raise GraphError(f"no param reaches the loss {graph.loss!r}: nothing to train")
    for name in graph.outputs:
        if graph[name].shape[:1] != (BATCH,):
            raise GraphError(f"outputs are per-row results with a batch dimension; {name!r} has shape "
                             f"{format_shape(graph[name].shape)}", node=name)
    return graph
