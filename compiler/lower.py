"""Lowering: a graph becomes an ordered list of kernels over named buffers.

A kernel is either a generated loop nest (a fused group of elementwise ops, possibly ending
in a reduction) or a call of a hand-written C routine (matmul, softmax, losses). Python
decides everything here; the templates only print it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .fusion import fuse_elementwise, is_inlined_constant, iteration_shape, product_in_place
from .ir import BATCH, Graph, concrete, numel
from .ops import KERNEL, REDUCE, SOURCE, get_op
from .ops.registry import float_literal

# Loops over at least this many floats are split over the OpenMP team; below it, starting
# the team costs more than it saves (a fork/join is ~0.5 us on 2 cores).
PARALLEL_MIN_FLOATS = 32768


def c_name(name: str) -> str:
    """A C identifier for a node name: 'dmm1/matmul#2' -> 'dmm1_matmul_2'."""
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "t"
    ident = re.sub(r"_+", "_", ident)
    return ident if not ident[0].isdigit() else "t" + ident


def dim(d) -> str:
    return "n" if d == BATCH else str(d)


@dataclass(frozen=True)
class Operand:
    """A buffer a loop reads or writes, with its index expression."""

    node: str
    pointer: str
    index: str
    dtype: str = "float32"


@dataclass(frozen=True)
class Loop:
    """One loop of a nest: variable and extent (a C expression)."""

    var: str
    extent: str       # the bound: var runs over [start, extent)
    start: str = "0"


@dataclass
class Kernel:
    """One step of a program. `reads`/`writes` are node names (buffers)."""

    name: str
    nodes: tuple
    reads: tuple
    writes: tuple
    comment: str
    # loop kernels
    loops: list = field(default_factory=list)
    inputs: list = field(default_factory=list)   # Operands read once per iteration
    body: list = field(default_factory=list)     # (C variable, expression) per fused node
    stores: list = field(default_factory=list)   # (Operand, C variable)
    accumulate: bool = False                     # a reduction: zero the output, then +=
    parallel: str | None = None  # element count (C) of a batch-sized loop the team may split
    split_columns: str | None = None  # a row reduction the team splits by these columns
    runtime: tuple = ()
    epilogue: str | None = None  # the GEMM call that runs this loop on its output blocks
    one_thread: bool = False  # never starts the OpenMP team (rows up to the capacity)
    # In a team step (see compiler/threads.py), who runs the kernel: "rows" every thread, on
    # its rows of the batch (row_lo, row_hi); "share" every thread, on its share of the
    # `share` rows of a routine's output (lo, hi) or of a loop's `split_columns`; "single"
    # the first thread. None: not a team step.
    team: str | None = None
    share: str | None = None
    # routine calls
    call: str | None = None
    can_fail: bool = False

    @property
    def is_loop(self):
        return self.call is None


class KernelCall:
    """What an op's `c_call` sees."""

    def __init__(self, node, graph, pointer, epilogue=None, alpha=None, rows=None):
        self.epilogue = epilogue  # name of a loop kernel to run on the output blocks
        self.alpha = alpha        # add alpha (a C expression) times the result into `out`
        self.rows = rows          # (lo, hi): compute only these rows of the output (splits_rows)
        self.attrs = node.attrs
        self.args = [pointer(i) for i in node.inputs]
        self.in_shapes = [graph[i].shape for i in node.inputs]
        self.out_shape = node.shape
        self.out = pointer(node.name)

    @staticmethod
    def dims(shape):
        return [dim(d) for d in shape]

    @staticmethod
    def numel(shape):
        return str(numel(shape))


PHASE_PREFIX = {"forward": "fwd", "backward": "bwd", "update": "upd"}


def lower(graph: Graph, keep, fusion=True, prefix=None, capacity=1, team=False):
    """Kernels of `graph` in execution order. `keep`: nodes that must be materialised;
    `capacity`: the most rows a call can have (loops that never reach PARALLEL_MIN_FLOATS
    at that size stay serial, without even a run-time test); `team`: kernels for a team
    step (compiler/threads.py), each run on its rows of the batch where it can.

    Loop kernels are named <phase>_<root node> (phase fwd, bwd, upd) or update_<target>
    for in-place writes; `prefix` (the entry, for entries other than the train step) goes
    in front, so every entry's kernels have names of their own.
    """
    pointers = {}
    for node in graph:  # in-place updates write their target's buffer
        target = node.attrs.get("writes")
        pointers[node.name] = pointers[target] if target else _unique(c_name(node.name), pointers)

    def pointer(name):
        return pointers[name]

    groups = fuse_elementwise(graph, keep, enabled=fusion)
    updates = {}  # group -> alpha: the GEMM adds alpha * product into the root's buffer
    for group in set(groups.values()):
        alpha = _update_in_gemm(graph, group, keep, capacity)
        if alpha:
            updates[group] = alpha
        if alpha or (group.head and product_in_place(graph, group, keep)):
            pointers[group.head] = pointers[group.root]  # the product goes into the root's buffer
    kernels, emitted = [], set()
    for node in graph:
        if get_op(node.op).kind == SOURCE or (node.name in groups and groups[node.name].head == node.name):
            continue
        if get_op(node.op).kind == KERNEL:
            kernels.append(_call_kernel(graph, node, pointer, capacity, team))
            continue
        group = groups.get(node.name)
        if group is None or group.root != node.name or group in emitted:
            continue
        emitted.add(group)
        if group in updates:
            kernels.append(_update_kernel(graph, group, pointer, updates[group], prefix, capacity, team))
        else:
            kernels.append(_loop_kernel(graph, group, pointer, prefix, capacity, product_in_place(graph, group, keep),
                                        team))
    return kernels, pointers


def _update_in_gemm(graph, group, keep, capacity):
    """alpha, when an epilogue group is a single node computing T + alpha * product into T's
    own buffer (an SGD step: W - lr * dW) and the product's routine can add into T itself,
    rounding as the loop would: the product (the gradient) is then never stored. Else None."""
    if not group.head or len(group.nodes) != 1 or group.head in keep:
        return None
    root, head = graph[group.root], graph[group.head]
    scaled_add, adds_scaled = get_op(root.op).scaled_add, get_op(head.op).adds_scaled
    target = root.attrs.get("writes")
    if (not scaled_add or not adds_scaled or tuple(root.inputs) != (target, head.name)
            or target in head.inputs or graph[target].shape != head.shape):
        return None
    shapes = [concrete(graph[i].shape, capacity) for i in head.inputs]
    return scaled_add(root) if adds_scaled(head, shapes) else None


def _one_thread(graph, node, capacity):
    """Whether the routine of a KERNEL node never starts the OpenMP team."""
    declared = get_op(node.op).one_thread
    return bool(declared) and declared(node, [concrete(graph[i].shape, capacity) for i in node.inputs])


def _update_kernel(graph, group, pointer, alpha, prefix, capacity, team):
    """The GEMM of `group` adding alpha times its product into the buffer the group updates."""
    head, root = graph[group.head], graph[group.root]
    target = root.attrs["writes"]
    name = f"update_{c_name(target)}"
    placement, share, rows = _team_placement(graph, head, team)
    return Kernel(name=f"{prefix}_{name}" if prefix else name, nodes=(head.name, root.name),
                  reads=(*head.inputs, target), writes=(root.name,),
                  call=get_op(head.op).c_call(KernelCall(head, graph, pointer, alpha=alpha, rows=rows)),
                  runtime=get_op(root.op).runtime, one_thread=_one_thread(graph, head, capacity),
                  team=placement, share=share,
                  comment=f"{target} = {_expression_text(graph, root.name, {head.name})}  "
                          f"{_shape_text(root.shape)}, the product added by the GEMM")


# Identifiers the emitted C uses besides buffer pointers: a node named like one of these
# gets a suffix. Loop-local values are named <pointer>_ and c_name never ends in "_", so
# those cannot clash.
RESERVED = set("""
    auto break case char const continue default do double else enum extern float for goto if inline
    int long register restrict return short signed sizeof static struct switch typedef union unsigned
    void volatile while int32_t int64_t uint32_t uint64_t size_t NULL INFINITY NAN
    n n_total lr t rt arena bad start total loss_total steps code order rows batch shuffle drop_last
    epilogue row0 col0 cols args row_offset inv_rows seed step row_lo row_hi lo hi thread threads team shared
    step_losses loss_sum kept stream j train_step shuffle_rows next first later next_rows cur these
    exp expf log logf sqrt sqrtf pow powf cos cosf tanh tanhf fabs fabsf memset memcpy
""".split())


def _is_reserved(name):
    return name in RESERVED or re.fullmatch(r"i\d+", name) or name.startswith("nncc")


ARGUMENT_SUFFIXES = ("_all", "_out", "_batch")  # entry arguments derived from a pointer name


def _unique(name, taken):
    """A pointer name not used yet, nor reserved, nor clashing with the entry arguments
    (<pointer>_all, _out, _batch) derived from it or from another pointer."""
    used = set(taken.values())
    used |= {u + s for u in used for s in ARGUMENT_SUFFIXES}
    candidate, k = name, 1
    while candidate in used or _is_reserved(candidate) or any(candidate + s in used for s in ARGUMENT_SUFFIXES):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _team_placement(graph, node, team):
    """(team, share, rows) of a KERNEL node's call in a team step: a routine that splits its
    output rows runs on each thread's rows of the batch when its output has them, else on
    each thread's share of its output rows; any other runs on one thread."""
    if not team:
        return None, None, None
    if not get_op(node.op).splits_rows:
        return "single", None, None
    if node.shape[0] == BATCH and not any(graph[i].shape[0] == BATCH for i in node.inputs[1:]):
        return "rows", None, ("row_lo", "row_hi")
    return "share", dim(node.shape[0]), ("lo", "hi")


def _call_kernel(graph, node, pointer, capacity, team):
    opdef = get_op(node.op)
    if opdef.c_call is None:  # an op that `expand` or `eval_mode` replaces in every program
        raise AssertionError(f"internal error: op {node.op!r} ({node.name!r}) has no C routine to lower to")
    placement, share, rows = _team_placement(graph, node, team)
    call = opdef.c_call(KernelCall(node, graph, pointer, rows=rows))
    return Kernel(name=f"{node.op}:{node.name}", nodes=(node.name,), reads=tuple(node.inputs),
                  writes=(node.name,), call=call, can_fail=opdef.failure is not None,
                  one_thread=_one_thread(graph, node, capacity), team=placement, share=share,
                  comment=f"{node.name} = {node.op}({', '.join(node.inputs)})  {_shape_text(node.shape)}")


def _shape_text(shape):
    return "[" + ", ".join(dim(d) for d in shape) + "]"


def _loop_kernel(graph, group, pointer, prefix, capacity, in_place=True, team=False):
    members = set(group.nodes)
    root = graph[group.root]
    shape = iteration_shape(graph, root)
    reads = [group.head] if group.head else []
    for name in group.nodes:
        for src in graph[name].inputs:
            if src not in members and src not in reads and not is_inlined_constant(graph[src]):
                reads.append(src)
    placement = rows = None
    if group.head:  # an epilogue runs on blocks [row0, row0 + rows) x [col0, col0 + cols)
        placement, _, rows = _team_placement(graph, graph[group.head], team)
        if placement == "share":  # the epilogue knows rows of the batch only
            placement, rows = "single", None
        # of the GEMM's output, which starts at row row_lo of the batch in a team step
        first = "row_lo + row0" if placement == "rows" else "row0"
        extents = [(dim(shape[0]), [0]), (dim(shape[1]), [1])]
        loops = [Loop("i0", f"{first} + rows", first), Loop("i1", "col0 + cols", "col0")]
    else:
        patterns = [_pattern(shape, graph[r].shape) for r in reads] + [_pattern(shape, root.shape)]
        extents = _collapse(shape, patterns)
        loops = [Loop(f"i{k}", ext) for k, (ext, _) in enumerate(extents)]
        if team:  # the first loop runs over whole rows of the batch: this thread's rows
            placement = "rows" if shape and shape[0] == BATCH and get_op(root.op).kind != REDUCE else "single"
            if placement == "rows":
                rest = extents[0][0][len(dim(BATCH)):]  # "n * 64" -> " * 64"
                loops[0] = Loop("i0", f"row_hi{rest}", f"row_lo{rest}")

    def index_of(node_shape):
        pattern = _pattern(shape, node_shape)
        strides, terms = "1", []
        for k in reversed(range(len(extents))):
            ext, dims_k = extents[k]
            if all(pattern[d] for d in dims_k):
                terms.append(loops[k].var if strides == "1" else f"{loops[k].var} * {strides}")
                strides = ext if strides == "1" else f"{strides} * {ext}"
        return " + ".join(reversed(terms)) or "0"

    values, body, runtime = {}, [], set()
    inputs = []
    for r in reads:  # the product of an epilogue's matmul is read where the GEMM left it
        var = f"{pointer(r)}__product" if r == group.head else f"{pointer(r)}_"  # c_name never has "__"
        inputs.append((Operand(r, pointer(r), index_of(graph[r].shape)), var))
        values[r] = var
    for name in group.nodes:
        node = graph[name]
        opdef = get_op(node.op)
        args = [values.get(src) or _constant(graph[src]) for src in node.inputs]
        numbers = {k: v for k, v in node.attrs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        fields = {k: float_literal(v) for k, v in numbers.items()}
        fields.update({f"{k}_double": repr(float(v)) for k, v in numbers.items()})
        fields.update({f"numel{i}": str(numel(graph[src].shape)) for i, src in enumerate(node.inputs)})
        fields["index"] = index_of(node.shape)  # flat index of this element in the node's tensor
        if opdef.c_fields:
            fields.update(opdef.c_fields(node))
        expr = opdef.expression(node).format(*args, **fields)
        var = f"{pointer(name)}_next" if "writes" in node.attrs else f"{pointer(name)}_"
        body.append((var, expr))
        values[name] = var
        runtime.update(opdef.runtime)
    store = Operand(root.name, pointer(root.name), index_of(root.shape))
    accumulate = get_op(root.op).kind == REDUCE
    target = root.attrs.get("writes")
    name = f"update_{c_name(target)}" if target else f"{PHASE_PREFIX[root.phase]}_{c_name(root.name)}"
    name = f"{prefix}_{name}" if prefix else name
    comment = _expression_text(graph, root.name, members | {group.head})
    epilogue = None
    if group.head:
        head = graph[group.head]
        epilogue = get_op(head.op).c_call(KernelCall(head, graph, pointer, epilogue=name, rows=rows))
        reads = [src for src in head.inputs if src not in reads] + [r for r in reads if r != group.head]
    writes = (root.name,) if not group.head or in_place else (group.head, root.name)
    # Elements are independent (a reduction's are not: its rows add into one output), so a
    # loop over the batch can be split over threads without changing any value.
    # A reduction over the rows into columns splits its columns instead: each column is
    # still summed over all rows in row order.
    parallel = split_columns = None
    if placement == "single" and not group.head:
        # In a team step a sum over the rows into columns splits its columns, and a loop over
        # no rows (a bias's update) its first loop: every thread takes its share of them
        # (the same share of the same extent in every such kernel), where there is more than
        # one share of 16 (nncc_thread_range).
        split = 1 if accumulate and len(loops) == 2 and store.index == loops[1].var else None
        split = 0 if not accumulate and BATCH not in shape else split
        if split is not None and split < len(loops) and \
                numel(concrete(tuple(shape[d] for d in extents[split][1]), capacity)) > 16:
            placement, split_columns = "share", loops[split].extent
            loops[split] = Loop(loops[split].var, "hi", "lo")
    elif not group.head and BATCH in shape and numel(concrete(shape, capacity)) >= PARALLEL_MIN_FLOATS:
        if not accumulate:
            parallel = " * ".join(ext for ext, _ in extents)
        elif len(loops) == 2 and store.index == loops[1].var:
            parallel = " * ".join(ext for ext, _ in extents)
            split_columns = loops[1].extent
            loops[1] = Loop(loops[1].var, "hi", "lo")
    return Kernel(name=name, nodes=((group.head,) if group.head else ()) + group.nodes, reads=tuple(reads),
                  epilogue=epilogue, writes=writes,
                  loops=loops, inputs=inputs, body=body, parallel=parallel, split_columns=split_columns, team=placement,
                  one_thread=_one_thread(graph, graph[group.head], capacity) if group.head else parallel is None,
                  stores=[(store, values[root.name])], accumulate=accumulate,
                  runtime=tuple(sorted(runtime)),
                  comment=f"{target or root.name} = {comment}  {_shape_text(root.shape)}"
                          + (f" summed from {_shape_text(shape)}" if accumulate else ""))


def _expression_text(graph, name, members):
    """'relu(add(mm0, b0))': what a fused loop computes, for its comment."""
    node = graph[name]
    args = [_expression_text(graph, src, members) if src in members else src for src in node.inputs]
    return f"{node.op}({', '.join(args)})"


def _constant(node):
    return float_literal(node.attrs["value"])


def _pattern(shape, operand_shape):
    """Per dim of the iteration shape: does the operand vary along it (True) or broadcast."""
    pad = len(shape) - len(operand_shape)
    return [i >= pad and operand_shape[i - pad] != 1 and shape[i] != 1 for i in range(len(shape))]


def _collapse(shape, patterns):
    """Merge adjacent dims every operand treats alike; returns [(extent, dims)]."""
    merged = []
    for d in range(len(shape)):
        if merged and all(p[d] == p[merged[-1][1][-1]] for p in patterns):
            ext, dims = merged[-1]
            merged[-1] = (ext, dims + [d])
        else:
            merged.append((None, [d]))
    out = []
    for _, dims in merged:
        parts = [dim(shape[d]) for d in dims if shape[d] != 1] or ["1"]
        out.append((" * ".join(parts), dims))
    return out
