"""The train graph (forward, derived backward, update) as Graphviz DOT text."""
from __future__ import annotations

from .ir import Graph
from .ops import SOURCE, get_op

PHASE_COLORS = {"forward": "#dbe9f6", "backward": "#fde2cf", "update": "#d9f0d3"}


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph, title="nncc train graph") -> str:
    lines = [f"digraph {_quote(title)} {{", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node in graph:
        shape = "[" + ", ".join("n" if d == "n" else str(d) for d in node.shape) + "]"
        color = "#eeeeee" if get_op(node.op).kind == SOURCE else PHASE_COLORS.get(node.phase, "#ffffff")
        label = f"{node.name}\\n{node.op} {shape}"
        lines.append(f"  {_quote(node.name)} [label={_quote(label)}, fillcolor={_quote(color)}];")
    for node in graph:
        for slot, src in enumerate(node.inputs):
            lines.append(f"  {_quote(src)} -> {_quote(node.name)} [label={slot}];")
        if "writes" in node.attrs:
            lines.append(f"  {_quote(node.name)} -> {_quote(node.attrs['writes'])} "
                         f"[style=dashed, color=\"#2a7f2a\", label=\"writes\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"
