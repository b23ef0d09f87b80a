"""What the compiler did, for people: ops, derived backward, kernels, arena, timings, cache."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from nncc.compiler.threads import TEAM_MIN_ROWS, alone_run
from nncc.compiler.ops import SOURCE, get_op


@dataclass
class Report:
    model: str
    forward_ops: Counter
    backward_ops: Counter
    update_ops: Counter
    kernels: list                 # (entry, kernel name or routine, nodes, comment)
    arena_bytes: int
    naive_bytes: int
    bytes_by_kind: dict
    timings: dict = field(default_factory=dict)
    cache_hit: bool | None = None
    cache_key: str = ""
    library: str = ""
    openmp: bool = True           # built with OpenMP; else every kernel runs on one thread
    alone: tuple = ()             # the train step's kernels during which fit gathers the next batch
    team: dict | None = None      # a team step: kernels per placement, barriers, rows per thread
    segment: dict | None = None   # step()'s team segment (the same counts), where fit gathers

    def __str__(self):
        lines = [f"nncc: model {self.model!r}"]

        def ops_line(label, counter):
            total = sum(counter.values())
            detail = ", ".join(f"{op} x{c}" for op, c in sorted(counter.items()))
            lines.append(f"  {label:<17}{total:>4}  ({detail})")

        ops_line("forward ops", self.forward_ops)
        ops_line("backward derived", self.backward_ops)
        ops_line("update ops", self.update_ops)
        train = [k for k in self.kernels if k[0] == "train"]
        fused = sum(1 for k in train if len(k[2]) > 1)
        lines.append(f"  kernels          {len(train):>4} in the train step ({fused} fused), "
                     f"{len(self.kernels) - len(train)} in eval")
        for entry, name, nodes, _ in self.kernels:
            if len(nodes) > 1:
                lines.append(f"    {entry:<5} {name}: {' + '.join(nodes)}")
        if self.team:
            t = self.team
            lines.append(f"  team step        the train step runs on the whole team: {t['rows']} kernels on each "
                         f"thread's rows (at least {t['min_rows']} each), {t['share']} shared out, "
                         f"{t['single']} on the first thread, {t['barriers']} barrier{'' if t['barriers'] == 1 else 's'}")
        if self.alone:
            lines.append(f"  fit              the next batch is gathered on the idle threads while one runs "
                         f"{len(self.alone)} one-thread kernels: {', '.join(self.alone)}")
        if self.segment:
            t = self.segment
            lines.append(f"  step             runs those on the whole team: {t['rows']} on each thread's rows (at "
                         f"least {t['min_rows']} each), {t['share']} shared out, {t['single']} on the first thread, "
                         f"{t['barriers']} barrier{'' if t['barriers'] == 1 else 's'}")
        lines.append(f"  arena            {_kib(self.arena_bytes)} (naive sum of buffers {_kib(self.naive_bytes)})")
        for kind, size in sorted(self.bytes_by_kind.items()):
            lines.append(f"    {kind:<20}{_kib(size):>12}")
        total = sum(self.timings.values())
        lines.append(f"  build time       {total * 1000:8.1f} ms")
        for stage, seconds in self.timings.items():
            lines.append(f"    {stage:<20}{seconds * 1000:9.2f} ms")
        if self.cache_hit is not None:
            lines.append(f"  cache            {'hit' if self.cache_hit else 'miss (compiled)'}  {self.library}")
        if not self.openmp:
            lines.append("  threads          one: the C compiler has no OpenMP")
        return "\n".join(lines)


def _kib(nbytes):
    return f"{nbytes / 1024:,.1f} KiB" if nbytes >= 1024 else f"{nbytes} B"


def make_report(model, program, timings):
    train = program.train.graph
    counters = {phase: Counter() for phase in ("forward", "backward", "update")}
    for node in train:
        if get_op(node.op).kind != SOURCE:
            counters[node.phase][node.op] += 1
    kernels = [(entry.name, _kernel_label(k), k.nodes, k.comment) for entry in program.entries for k in entry.kernels]
    start, stop = alone_run(program.train.kernels) if program.gather_overlaps else (0, 0)
    return Report(model=model, forward_ops=counters["forward"], backward_ops=counters["backward"],
                  update_ops=counters["update"], kernels=kernels, arena_bytes=4 * program.arena_floats,
                  naive_bytes=4 * program.naive_floats(), bytes_by_kind=program.bytes_by_kind(),
                  timings=dict(timings), alone=tuple(_kernel_label(k) for k in program.train.kernels[start:stop]),
                  team=_placements(program.train.kernels, program.train.team_barriers, program.team_rows),
                  segment=_placements(program.train.segment, program.train.segment_barriers, TEAM_MIN_ROWS))


def _placements(kernels, barriers, min_rows):
    """Kernels per placement and barriers of a team step or segment (None: there is none)."""
    if barriers is None:
        return None
    placements = Counter(k.team for k in kernels)
    return {"rows": placements["rows"], "share": placements["share"], "single": placements["single"],
            "barriers": sum(barriers), "min_rows": min_rows}


def _kernel_label(kernel):
    """A loop kernel's name; a routine call's C function, after the kernel's name when the
    call does more than its own node (a GEMM adding an SGD step into the weights)."""
    if kernel.is_loop:
        return kernel.name
    routine = kernel.call.split("(")[0]
    return routine if len(kernel.nodes) == 1 else f"{kernel.name} ({routine})"
