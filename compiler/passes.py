"""Graph-to-graph passes and the pipeline that runs them, in one flat list.

Each pass is a pure function Graph -> Graph; `Pipeline` times them, keeps each stage's graph
for `nncc.compile(debug_dir=...)` and, in check mode (`check_passes=True`), validates each
new graph and asserts the reference interpreter gives the same numbers before and after
the pass (compiler/check.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .autodiff import GradBuilder, differentiate
from .check import check_pass
from .ir import BATCH, FORWARD, UPDATE, Graph
from .load import infer_shapes, load, validate_training
from .ops import SOURCE, get_op
from .optimizers import append_state_updates, append_update, with_new_state


def roots(graph: Graph):
    """What a train program must compute: the loss, the outputs, grads and every in-place write."""
    keep = [graph.loss, *graph.outputs, *graph.grads.values()]
    keep += [n.name for n in graph if "writes" in n.attrs]
    return [k for k in keep if k is not None]


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Merge nodes computing the same op of the same inputs with the same attributes."""
    seen, rename, nodes = {}, {}, []
    protected = {graph.loss, *graph.outputs}  # names the user reads keep their node
    for node in graph:
        node = node.replace(inputs=tuple(rename.get(i, i) for i in node.inputs))
        if get_op(node.op).kind == SOURCE or "writes" in node.attrs or node.name in protected:
            nodes.append(node)
            continue
        key = (node.op, node.inputs, tuple(sorted((k, repr(v)) for k, v in node.attrs.items())))
        if key in seen:
            rename[node.name] = seen[key]
        else:
            seen[key] = node.name
            nodes.append(node)
    grads = {p: rename.get(g, g) for p, g in graph.grads.items()}
    return graph.with_nodes(nodes).replace(grads=grads)


def expand_composite_ops(graph: Graph) -> Graph:
    """Replace each node whose op has an `expand` form by that form, under the node's own
    name: consumers, outputs and grads still read it. After autodiff, before CSE."""
    b = GradBuilder(graph)
    nodes = []
    for node in graph:
        expand = get_op(node.op).expand
        if expand is None:
            nodes.append(node)
            continue
        del b.nodes[node.name]
        b.names.taken.discard(node.name)
        b.new, b.phase = [], node.phase
        expand(b, node, node.name)
        nodes.extend(b.new)
    return graph.with_nodes(nodes)


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes no root depends on (params, inputs and state are kept: they are the interface)."""
    live = graph.ancestors(roots(graph)) | set(graph.params) | set(graph.inputs) | set(graph.state)
    return graph.with_nodes(n for n in graph if n.name in live)


@dataclass
class Pipeline:
    """Runs the passes in order, timing each; keeps each stage's graph when asked to."""

    timings: dict = field(default_factory=dict)
    stages: list = field(default_factory=list)
    keep_stages: bool = False
    check: bool = False

    def run(self, name, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        if self.keep_stages:
            self.stages.append((name, result))
        if self.check and isinstance(result, Graph) and args and isinstance(args[0], Graph):
            check_pass(name, args[0], result)
        return result


def differentiated_graph(user_graph, loss, outputs, pipeline=None) -> Graph:
    """load -> shapes -> validate -> autodiff -> state updates: what every train entry shares."""
    p = pipeline or Pipeline()
    g = p.run("load", load, user_graph, loss, outputs)
    g = p.run("infer shapes", infer_shapes, g)
    g = p.run("validate", validate_training, g)
    g = p.run("autodiff", differentiate, g)
    return p.run("state updates", append_state_updates, g)


def optimized(graph, pipeline=None) -> Graph:
    """expand -> CSE -> DCE."""
    p = pipeline or Pipeline()
    g = p.run("expand", expand_composite_ops, graph)
    return p.run("dce", eliminate_dead_code, p.run("cse", eliminate_common_subexpressions, g))


def build_train_graph(user_graph, loss, outputs, optimizer, pipeline=None) -> Graph:
    """The train step: ... -> optimizer update -> CSE -> DCE."""
    p = pipeline or Pipeline()
    g = differentiated_graph(user_graph, loss, outputs, p)
    return optimized(p.run("optimizer update", append_update, g, optimizer), p)


def build_accumulation_graphs(user_graph, loss, outputs, optimizer):
    """Gradient accumulation: (accumulate, apply) graphs.

    accumulate: forward, backward and state updates, then grad_sum += (n *) grad per param.
    apply: the optimizer update from grad_sum (averaged over the rows for a mean loss),
    then grad_sum reset to zero.
    """
    g = differentiated_graph(user_graph, loss, outputs)
    per_row = g[g.loss].attrs.get("reduction", "mean") == "mean"
    b = GradBuilder(g, phase=UPDATE)
    sums = {p: b.op("state", name=f"{p}.grad_sum", shape=g[p].shape, init="zeros") for p in g.params}
    for p, total in sums.items():
        b.op("grad_accumulate", total, g.grads[p], name=f"update({total})", per_row=per_row, writes=total)
    accumulate = optimized(with_new_state(g, b))

    params = [g[p] for p in g.params]
    apply = Graph(nodes={n.name: n for n in params + [b.nodes[s] for s in sums.values()]},
                  loss=None, params=g.params, state=tuple(sums.values()))
    b = GradBuilder(apply, phase=UPDATE)
    grads = {p: b.op("grad_average", s, name=f"mean({s})") if per_row else s for p, s in sums.items()}
    apply = append_update(apply.replace(nodes=b.nodes, grads=grads), optimizer)
    b = GradBuilder(apply, phase=UPDATE)
    for p, total in sums.items():
        b.op("fill_zero", f"update({p})", name=f"reset({total})", writes=total)
    apply = apply.replace(nodes=b.nodes)
    return accumulate, apply



def to_eval_mode(graph: Graph) -> Graph:
    """Replace train-only behaviour by each op's eval form (dropout: identity; batch_norm:
    running statistics). An output keeps its name through an identity node."""
    b = GradBuilder(graph, phase=FORWARD)
    rename, nodes = {}, []
    for node in graph:
        node = node.replace(inputs=tuple(rename.get(i, i) for i in node.inputs))
        hook = get_op(node.op).eval_mode
        if hook is None:
            nodes.append(node)
            b.nodes[node.name] = node
            continue
        b.new = []
        replacement = hook(b, node)
        if node.name in graph.outputs:
            del b.nodes[node.name]
            b.names.taken.discard(node.name)
            replacement = b.op("identity", replacement, name=node.name)
        nodes.extend(b.new)
        rename[node.name] = replacement
    return graph.with_nodes(nodes)


def build_eval_graph(user_graph, outputs, loss=None, pipeline=None) -> Graph:
    """The forward graph in eval mode, pruned to what the outputs (and loss) need."""
    p = pipeline or Pipeline()
    g = p.run("load", load, user_graph, loss, outputs)
    g = p.run("infer shapes", infer_shapes, g)
    g = p.run("eval mode", to_eval_mode, g)
    g = g.replace(state=tuple(n.name for n in g if n.op == "state"))
    live = g.ancestors(g.outputs + ((loss,) if loss else ())) | set(g.params) | set(g.state)
    return g.with_nodes(n for n in g if n.name in live).replace(inputs=tuple(i for i in g.inputs if i in live))


def evaluation_outputs(train: Graph):
    """What `evaluate` reads back besides the loss: the loss's prediction (its first input)
    when it is per-row, so that classifiers also report accuracy."""
    pred = train[train.loss].inputs[0]
    return [pred] if train[pred].shape[:1] == (BATCH,) else []
