"""The pipeline's check mode (`nncc.compile(..., check_passes=True)`): after each pass that
turns a graph into a graph, the new graph is validated again (its nodes in order, every
shape and dtype what its op's rule gives) and the reference interpreter runs both graphs
on the same random feeds, params and state: the loss, the outputs, every param's gradient
and every in-place write the two share must be the same numbers, bit for bit (float64).
A pass may add values (autodiff adds gradients) but never change one."""
from __future__ import annotations

import numpy as np

from .ir import Graph
from .load import infer_shapes

# Passes that change what a graph computes on purpose: eval mode (dropout off, batch norm
# on running statistics).
CHANGES_SEMANTICS = frozenset({"eval mode"})
ROWS = 4  # rows of the random batch: batch_norm needs 2


def check_pass(name: str, before: Graph, after: Graph, seed=0):
    _check_structure(name, after)
    if name in CHANGES_SEMANTICS or any(node.shape is None for node in before):
        return  # (a graph runs once it has its shapes)
    feeds = _random_feeds(after, seed)
    old, new = _exposed(before, feeds, seed), _exposed(after, feeds, seed)
    for key in sorted(old.keys() & new.keys()):
        if not np.array_equal(old[key], new[key], equal_nan=True):
            diff = np.max(np.abs(np.asarray(old[key], float) - np.asarray(new[key], float)))
            raise AssertionError(f"internal error: pass {name!r} changed {' '.join(key)} "
                                 f"(max difference {diff:.3g}; please report)")


def _check_structure(name, graph):
    try:
        shaped = infer_shapes(graph)
    except Exception as error:  # a node read before it is computed, or an op's rule refused
        raise AssertionError(f"internal error: pass {name!r} left an invalid graph: {error}") from error
    for node in graph:
        if (node.shape, node.dtype) != (shaped[node.name].shape, shaped[node.name].dtype):
            raise AssertionError(f"internal error: pass {name!r} left node {node.name!r} with shape "
                                 f"{node.shape} {node.dtype}, its op gives {shaped[node.name].shape} "
                                 f"{shaped[node.name].dtype}")
    names = [graph.loss, *graph.outputs, *graph.grads.values()] if graph.loss else [*graph.outputs]
    missing = [n for n in names if n not in graph.nodes]
    if missing:
        raise AssertionError(f"internal error: pass {name!r} dropped {missing}")


def _random_feeds(graph, seed):
    """Normal floats; labels in range for the op that reads them (its first input's last axis)."""
    rng = np.random.default_rng(seed)
    users = graph.consumers()
    feeds = {}
    for name in graph.inputs:
        node = graph[name]
        shape = (ROWS, *node.shape[1:])
        if node.dtype == "int32":
            classes = min((graph[graph[u].inputs[0]].shape[-1] for u in users[name]), default=1)  # unread: any
            feeds[name] = rng.integers(0, classes, size=shape)
        else:
            feeds[name] = rng.normal(size=shape)
    return feeds


def _exposed(graph, feeds, seed):
    from .interpreter import Interpreter  # it builds graphs through the passes

    values = Interpreter.of_stage(graph, seed).run(graph, feeds)
    out = {("output", o): values[o] for o in graph.outputs}
    if graph.loss:
        out[("loss", graph.loss)] = values[graph.loss]
    out.update({("gradient of", p): values[g] for p, g in graph.grads.items()})
    out.update({("update of", node.attrs["writes"]): values[node.name] for node in graph if "writes" in node.attrs})
    return out
