"""C emission: the program is printed through Jinja2 templates (StrictUndefined).

Python has decided everything by now (kernels, loops, offsets); templates only loop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import jinja2

from .ir import numel
from .lower import PARALLEL_MIN_FLOATS, dim
from .ops import get_op
from .program import Entry, Program, row_size
from .random import SHUFFLE_KEY
from .threads import TEAM_MIN_ROWS, alone_run

PRELUDE_LIBRARIES = ("vmath", "schedule", "random")  # always included: expressions call into them
# The GEMM's files in templates/kernels, in the order they are put together (declarations
# first): every module includes them, and runtime/build.py compiles them on their own.
GEMM_TEMPLATES = ("gemm.c.j2", "gemm_pack.c.j2", "gemm_driver.c.j2")

# Run-time scalars expressions may read: C type, how an entry computes it, what it is.
RUNTIME_SCALARS = {
    "lr": ("float", "nncc_scheduled_lr(rt)", "the scheduled learning rate of this step"),
    "t": ("float", "(float)(rt->step + 1)", "1-based number of this optimizer step"),
    "seed": ("uint64_t", "rt->seed", "seed of the dropout masks"),
    "step": ("int64_t", "rt->step", "optimizer steps taken before this one"),
    "row_offset": ("int64_t", "rt->accumulated_rows", "rows accumulated before this micro-batch"),
    "inv_rows": ("float", "1.0f / (float)(rt->accumulated_rows > 0 ? rt->accumulated_rows : 1)",
                 "1 / the rows accumulated (1 when none)"),
}


def _environment():
    root = resources.files("nncc.templates")
    loader = jinja2.FileSystemLoader(str(root))
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


ENV = _environment()


@dataclass(frozen=True)
class CSource:
    source: str     # the .c file
    header: str     # the .h file
    cdef: str       # the declarations cffi reads (the header without preprocessor lines)


def _params(kernel):
    """A loop kernel's C parameters: read buffers const, the written one not, no duplicates
    (an epilogue reads the product from, and writes the result to, the same buffer)."""
    out_ptrs = {op.pointer for op, _ in kernel.stores}
    params = [(RUNTIME_SCALARS[r][0], r) for r in kernel.runtime]
    if kernel.team == "rows":  # this thread's rows of the batch (an epilogue's end comes from the GEMM)
        params = [("int64_t", "row_lo"), *([] if kernel.epilogue else [("int64_t", "row_hi")]), *params]
    for op, _ in kernel.inputs:
        if any(op.pointer == p for _, p in params):
            continue
        if op.pointer in out_ptrs:  # read and written in place: one non-const parameter
            params.append(("float *restrict", op.pointer))
        else:
            params.append(("const float *restrict", op.pointer))
    seen = {p for _, p in params}
    params += [("float *restrict", op.pointer) for op, _ in kernel.stores if op.pointer not in seen]
    return params


def _entry_view(entry: Entry, program: Program):
    g = entry.graph
    feeds = [{"name": f, "pointer": entry.pointers[f], "ctype": "int32_t" if g[f].dtype == "int32" else "float",
              "row": row_size(g, f)} for f in entry.feeds]
    buffers = [{"pointer": entry.pointers[b.node], "offset": b.offset, "kind": b.kind,
                "shape": "[" + ", ".join(dim(d) for d in g[b.node].shape) + "]", "node": b.node}
               for b in entry.used_buffers()]
    overlap = alone_run(entry.kernels) if entry is program.train and program.gather_overlaps else None
    steps, segment, error_code = [], [], 0
    for k, kernel in enumerate(entry.kernels):
        if kernel.can_fail:
            error_code += 1
        alone = overlap and overlap[0] <= k < overlap[1]
        # inside the run alone (see threads.alone_run) the thread leaves through the team's
        # end; in a team step (or segment) every thread leaves after the barrier that follows
        fail = (f"code = {error_code}; goto alone_done;" if alone
                else f"team->code = {error_code};" if entry.team_barriers else f"return {error_code};")
        steps.append(_step(kernel, fail))
        if alone and entry.segment:
            segment.append(_step(entry.segment[k - overlap[0]], f"code = {error_code};"))
    for f in feeds:
        f["staging"] = program.staging.get(f["name"]) if entry is program.train else None
    outputs = [{"name": o, "pointer": entry.pointers[o], "row": row_size(g, o)} for o in entry.outputs]
    args = "".join(f", const {f['ctype']} *{f['pointer']}_all" for f in feeds)
    args += "".join(f", float *{o['pointer']}_out" for o in outputs)
    if entry.loss:
        args += ", double *loss_total"
    return {"name": entry.name, "feeds": feeds, "buffers": buffers, "steps": steps,
            "overlap": overlap and {"before": steps[:overlap[0]], "alone": steps[overlap[0]:overlap[1]],
                                    "after": steps[overlap[1]:],
                                    "fails": any(k.can_fail for k in entry.kernels[overlap[0]:overlap[1]]),
                                    "segment": entry.segment and _team_view(entry.segment, entry.segment_barriers,
                                                                            segment)},
            "team": entry.team_barriers is not None and _team_view(entry.kernels, entry.team_barriers, steps),
            "can_fail": error_code > 0, "outputs": outputs,
            "signature": f"int nncc_{entry.name}(nncc_runtime *rt, float *arena, int64_t n_total{args})",
            "loss": entry.loss, "loss_pointer": entry.pointers.get(entry.loss),
            "step_loss_pointer": entry.pointers.get(g.loss),
            "step_loss_offset": entry.buffers[g.loss].offset if g.loss in entry.buffers else None,
            "loss_mean": bool(entry.loss) and g[entry.loss].attrs.get("reduction", "mean") == "mean",
            "runtime": [{"name": r, "ctype": RUNTIME_SCALARS[r][0], "value": RUNTIME_SCALARS[r][1],
                         "doc": RUNTIME_SCALARS[r][2]}
                        for r in sorted({r for k in entry.kernels for r in k.runtime})]}


def _step(kernel, fail):
    """A kernel's comment and C statement; `fail`: what a failing call does after saving
    the bad row."""
    if kernel.epilogue:
        fields = ", ".join(["n"] + [p for _, p in _params(kernel)])
        statement = f"{{ const struct {kernel.name}_args epilogue = {{{fields}}}; {kernel.epilogue}; }}"
    elif kernel.is_loop:
        statement = f"{kernel.name}({', '.join(['n'] + [p for _, p in _params(kernel)])});"
    elif kernel.can_fail:
        statement = f"if ((bad = {kernel.call}) != 0) {{ rt->error_index = bad - 1; {fail} }}"
    elif kernel.team == "share":
        statement = f"{{ int64_t lo, hi; nncc_thread_share({kernel.share}, NNCC_TEAM_MIN_ROWS, &lo, &hi); {kernel.call}; }}"
    else:
        statement = f"{kernel.call};"
    return {"comment": kernel.comment, "statement": statement}


def _team_view(kernels, barriers, steps):
    """Statements run by a team (a team step, or step()'s segment) in blocks: each starts
    after a barrier (or not), runs on every thread or on the first, and checks for a
    failure before it where one may have happened."""
    blocks = []
    for k, (kernel, step) in enumerate(zip(kernels, steps)):
        barrier, single = barriers[k], kernel.team == "single"
        if blocks and not barrier and blocks[-1]["single"] == single:
            blocks[-1]["steps"].append(step)
        else:
            blocks.append({"barrier": barrier, "single": single, "steps": [step],
                           "check": k > 0 and kernels[k - 1].can_fail})
    return {"blocks": blocks, "rows": any(k.team == "rows" for k in kernels),
            "single": any(k.team == "single" for k in kernels)}


def _loop_view(kernel):
    return {"name": kernel.name, "comment": kernel.comment, "params": _params(kernel),
            "loops": kernel.loops, "inputs": kernel.inputs, "body": kernel.body,
            "stores": kernel.stores, "accumulate": kernel.accumulate, "parallel": kernel.parallel,
            "split_columns": kernel.split_columns,
            "out_numel": None, "uses_n": _uses_n(kernel), "epilogue": kernel.epilogue is not None,
            "fields": [ctype[:-len("restrict")] + name if ctype.endswith("*restrict") else f"{ctype} {name}"
                       for ctype, name in _params(kernel)]}


def _uses_n(kernel):
    text = " ".join([*(lp.extent for lp in kernel.loops), *(e for _, e in kernel.body),
                     *(op.index for op, _ in kernel.inputs), *(op.index for op, _ in kernel.stores)])
    return re.search(r"\bn\b", text) is not None


def emit(program: Program, model_name="model") -> CSource:
    libraries = list(PRELUDE_LIBRARIES)
    for entry in program.entries:
        for kernel in entry.kernels:
            lib = None if kernel.is_loop and not kernel.epilogue else get_op(entry.graph[kernel.nodes[0]].op).library
            for name in (lib,) if isinstance(lib, str) else lib or ():
                if name not in libraries:
                    libraries.append(name)
    loops = []
    for entry in program.entries:
        for kernel in (*entry.kernels, *(entry.segment or ())):
            if kernel.is_loop:
                view = _loop_view(kernel)
                if kernel.accumulate:
                    view["out_numel"] = str(numel(entry.graph[kernel.writes[0]].shape))
                loops.append(view)
    context = {
        "model": model_name,
        "guard": "NNCC_" + "".join(c if c.isalnum() else "_" for c in model_name.upper()) + "_H",
        "capacity": program.capacity,
        "arena_floats": program.arena_floats,
        "libraries": libraries,
        "gemm_templates": GEMM_TEMPLATES,
        "loop_kernels": loops,
        "train": _entry_view(program.train, program),
        "eval": _entry_view(program.eval, program),
        "evaluate": _entry_view(program.evaluate, program),
        "accumulate": program.accumulate and _entry_view(program.accumulate, program),
        "apply": program.apply and _entry_view(program.apply, program),
        "shuffle_key": SHUFFLE_KEY,
        "parallel_min_floats": PARALLEL_MIN_FLOATS,
        "team_rows": program.team_rows,
        "segment_rows": TEAM_MIN_ROWS,
        "team_auto": program.team_auto,
    }
    declarations = ENV.get_template("declarations.h.j2").render(context)
    header = ENV.get_template("module.h.j2").render(context, declarations=declarations)
    source = ENV.get_template("module.c.j2").render(context, header_name=f"{model_name}.h",
                                                    declarations=declarations)
    return CSource(source=source, header=header, cdef=declarations)

