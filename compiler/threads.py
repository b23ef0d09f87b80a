"""How a train step uses the threads beyond the kernels that split their own work.

Two schedules, never both:
- a *team step*: where no kernel would start the OpenMP team (every GEMM small, every loop
  short), the whole step runs on all threads at once (templates/kernels/team.c.j2): kernels
  over the batch take each thread's rows, GEMMs whose output rows are not the batch each
  thread's share of them, sums over the rows and loops over params each thread's share of
  their elements, the rest runs on the first thread, with a barrier wherever a kernel
  touches memory that another thread touched since the last one (`team_barriers`);
- fit's gather overlap: the step's longest run of one-thread kernels runs on one thread
  while the others gather the next batch (`alone_run`, `lengthen_alone_run`); step(), with
  nothing to gather, runs that run on all threads as a team segment (`team_segment`), with
  the team step's placements and barriers.
"""
from __future__ import annotations

from .ir import BATCH, concrete
from .ops import get_op
from .ops.linalg import matmul_flops

# A team step pays when its matmuls do at least this many flops at the batch capacity: on 2
# cores it costs ~2 us beyond its arithmetic (fork, join, a barrier, and the cache lines
# the threads trade: W1, 800k flops, 10.9 us alone, ~9 on the team), the time of ~250k
# flops of small GEMMs on one core. (The step also times itself against one thread.)
TEAM_MIN_FLOPS = 400_000
# and only for at least this many rows per thread (NNCC_TEAM_MIN_ROWS in module.c.j2).
TEAM_MIN_ROWS = 16


def team_pays(graph, kernels, capacity):
    """Whether the train step runs as one team: no kernel starts the team on its own at the
    capacity (else those kernels use the threads), the capacity gives every thread its
    rows, and the matmuls do enough work to pay for a fork and a few barriers."""
    if capacity < 2 * TEAM_MIN_ROWS or not all(k.one_thread for k in kernels):
        return False
    flops = sum(matmul_flops(node, [concrete(graph[i].shape, capacity) for i in node.inputs])
                for node in graph if node.op == "matmul")
    return flops >= TEAM_MIN_FLOPS


def gather_team_rows(graph, kernels):
    """`kernels` with each kernel over the batch rows moved up past the kernels of other
    placements before it that touch nothing it reads or writes, so that kernels over the
    batch run back to back, without barriers (W1: the forward and backward over the batch
    first, then the loss and the bias gradients on the first thread, then the updates)."""
    order = []
    for kernel in kernels:
        k = len(order)
        if kernel.team == "rows":
            while k > 0 and order[k - 1].team != "rows" and not _conflict(graph, kernel, order[k - 1]):
                k -= 1
        order.insert(k, kernel)
    return order


def team_barriers(graph, kernels, pointers, buffers):
    """Per kernel of a team step, whether a barrier goes before it: where it reads or writes
    arena memory (planned buffers share memory) that a kernel since the last barrier wrote,
    or writes memory such a kernel read, unless both run on the first thread, or both touch
    the same batch buffer on their own rows, or the same buffer's elements by the same split
    of the same extent. After a kernel that can fail, always (every thread then learns of
    the failure at once)."""
    spans = {pointers[node]: (b.offset, b.offset + b.size) for node, b in buffers.items()}
    by_rows = {pointers[node.name] for node in graph if node.shape and node.shape[0] == BATCH}
    barriers, since, after_failure = [], [], False
    for kernel in kernels:
        shared = _shared_out(kernel)
        touched = [(kernel.team, pointer, spans[pointer], write,
                    "rows" if kernel.team == "rows" and pointer in by_rows else shared.get(pointer))
                   for names, write in ((kernel.reads, False), (kernel.writes, True))
                   for pointer in {pointers[name] for name in names} if pointer in spans]
        barrier = after_failure or any(_clash(a, b) for a in since for b in touched)
        barriers.append(barrier)
        since = touched if barrier else since + touched
        after_failure = kernel.can_fail
    return tuple(barriers)


def _shared_out(kernel):
    """pointer -> ("share", extent) for the buffers that a loop kernel sharing out its loop
    over `extent` indexes by that loop alone: each thread touches its own elements of them."""
    split = [lp.var for lp in kernel.loops if lp.extent == "hi"] if kernel.team == "share" else []
    return {op.pointer: ("share", kernel.split_columns) for op, _ in (*kernel.inputs, *kernel.stores)
            if split and op.index == split[0]}


def _clash(a, b):
    """Whether two accesses (placement, pointer, span, write, split) need a barrier between
    them: they overlap, one writes, and they may be on different threads (both on the
    first thread, or both on the same elements of the same buffer by the same split, are not)."""
    (team_a, pointer_a, span_a, write_a, split_a), (team_b, pointer_b, span_b, write_b, split_b) = a, b
    if not (write_a or write_b) or span_a[0] >= span_b[1] or span_b[0] >= span_a[1]:
        return False
    if team_a == team_b == "single":
        return False
    return not (pointer_a == pointer_b and split_a is not None and split_a == split_b)


def alone_run(kernels):
    """[start, stop) of the longest run of kernels that never start the OpenMP team (the
    first of equals; empty at 0 when there is none): fit's train step runs them on one thread
    while the other threads gather the next batch."""
    best, start = (0, 0), 0
    for k, kernel in enumerate([*kernels, None]):
        if kernel is None or not kernel.one_thread:
            if k - start > best[1] - best[0]:
                best = (start, k)
            start = k + 1
    return best


def team_segment(kernels, team_kernels):
    """step()'s versions of the kernels of the run that fit gives one thread (`alone_run`):
    the team step's (`team_kernels`, lowered with team placements), so that step(), with no
    batch to gather, runs that stretch on all threads (W2: the small GEMMs on each thread's
    rows, the loss on the first; ~13.6 us alone). None where no kernel of it splits."""
    start, stop = alone_run(kernels)
    by_nodes = {k.nodes: k for k in team_kernels}
    segment = tuple(by_nodes[k.nodes] for k in kernels[start:stop])
    return segment if any(k.team != "single" for k in segment) else None


def lengthen_alone_run(graph, kernels):
    """`kernels` with every later one-thread kernel that may run earlier moved to the end of
    the longest one-thread run: it may when no kernel it passes writes a buffer it reads,
    or reads or writes a buffer it writes. (W2: the updates of fc1.b, fc2.W and fc2.b join
    the head of the backward pass, ahead of fc1.W's update on the team.)"""
    order = list(kernels)
    end = alone_run(order)[1]
    if end == 0:
        return order
    k = end + 1  # order[end] starts the team
    while k < len(order):
        kernel = order[k]
        if kernel.one_thread and not any(_conflict(graph, kernel, other) for other in order[end:k]):
            order.insert(end, order.pop(k))
            end += 1
        k += 1
    return order


def _conflict(graph, a, b):
    def buffers(names):  # an in-place write lands in its target's buffer
        return {graph[n].attrs.get("writes") or n for n in names}

    a_reads, a_writes, b_reads, b_writes = (buffers(x) for x in (a.reads, a.writes, b.reads, b.writes))
    return bool(a_reads & b_writes or a_writes & (b_reads | b_writes))
