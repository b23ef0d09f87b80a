"""nncc.compile: user graph -> passes -> C -> cached shared library -> Trainer."""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from nncc.compiler.emit import emit
from nncc.compiler.optimizers import SGD
from nncc.compiler.passes import (Pipeline, build_accumulation_graphs, build_eval_graph, build_train_graph,
                                  evaluation_outputs)
from nncc.compiler.program import make_program

from .build import build, compiler_command, load_library
from .report import make_report
from .trainer import Trainer


@dataclass(frozen=True)
class CompileSpec:
    """Everything `compile` was given, kept so a reference run or a checkpoint can rebuild it."""

    graph: object
    loss: str
    outputs: tuple
    optimizer: object
    batch_size: int
    seed: int
    fusion: bool
    name: str
    accumulate: bool = False
    keep_grads: bool = False
    team: bool | None = None


def compile_graph(graph, loss="loss", outputs=None, optimizer=None, batch_size=32, seed=0, *,
                  fusion=True, accumulate=False, keep_grads=False, team=None, name="model", debug_dir=None,
                  check_passes=False):
    """Compile a training graph to C and return a ready `Trainer`.

    graph: nx.DiGraph of ops (see README "The graph").
    loss: name of the scalar loss node. outputs: node names `predict` returns (default: the
    loss's non-input predecessors). optimizer: nncc.SGD(...) (default SGD(lr=0.01)).
    batch_size: the most rows one `step` takes (fewer run without a rebuild).
    seed: initial values of params with an `init`, dropout masks, fit's shuffle.
    fusion: fuse elementwise chains. accumulate: also build gradient accumulation
    (`accumulate_gradients` / `apply_gradients`; one extra buffer the size of each param).
    keep_grads: keep every param's gradient of the last step in `trainer.grads` (else they
    are temporaries, and an SGD step W -= lr * X^T dY is added by the GEMM itself, the
    gradient never stored; the same numbers either way).
    team: run the whole train step on the OpenMP team, each thread on its rows of the batch
    (None: where no kernel would use the team on its own and the step is big enough to pay
    for it; True: always, with any rows per thread; False: never). The same numbers either way.
    debug_dir: write every stage's graph and the C source there.
    check_passes: validate the graph after every pass and check that the reference
    interpreter computes the same numbers before and after it (compiler/check.py; for
    debugging nncc, and in its tests).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    optimizer = optimizer or SGD(lr=0.01)
    pipeline = Pipeline(keep_stages=debug_dir is not None, check=check_passes)
    train = build_train_graph(graph, loss, outputs, optimizer, pipeline)
    eval_graph = pipeline.run("eval graph", build_eval_graph, graph, train.outputs)
    evaluate_graph = build_eval_graph(graph, evaluation_outputs(train), train.loss)
    accumulation = build_accumulation_graphs(graph, loss, outputs, optimizer) if accumulate else None
    program = pipeline.run("lower + memory plan", make_program, train, eval_graph, evaluate_graph, batch_size,
                           fusion, accumulation, keep_grads, team)
    fingerprint = pipeline.run("fingerprint", program_fingerprint, program)
    result = build(fingerprint, lambda: pipeline.run("emit C", emit, program, name), name)
    compiled = result.seconds - pipeline.timings.get("emit C", 0.0)
    pipeline.timings["build (cache hit)" if result.cache_hit else "build (cc)"] = compiled
    start = time.perf_counter()
    ffi, lib = load_library(result.library, result.cdef)
    pipeline.timings["dlopen"] = time.perf_counter() - start
    report = make_report(name, program, pipeline.timings)
    report.cache_hit, report.cache_key, report.library = result.cache_hit, result.key, str(result.library)
    report.openmp = result.openmp
    if not result.openmp:
        warnings.warn(f"nncc: the C compiler ({' '.join(compiler_command())}) cannot build OpenMP code, so "
                      f"this model's kernels run on one thread. Install its OpenMP runtime (libomp for "
                      f"clang) or use GCC ($CC) to use every core.", RuntimeWarning, stacklevel=2)
    spec = CompileSpec(graph, loss, tuple(train.outputs), optimizer, batch_size, seed, fusion, name, accumulate,
                       keep_grads, team)
    trainer = Trainer(program, ffi, lib, spec=spec, report=report, seed=seed)
    trainer.build = result
    if debug_dir is not None:
        _dump(Path(debug_dir), pipeline.stages, result, name)
    return trainer


def program_fingerprint(program) -> str:
    """A hash of the planned program: kernels, buffers, offsets, names, attributes. The C
    is a function of it (and of nncc's code, hashed into the key separately), so a cache
    hit needs no emission."""
    return hashlib.sha256(repr(program).encode()).hexdigest()


def _dump(directory: Path, stages, code, name):
    directory.mkdir(parents=True, exist_ok=True)
    for k, (stage, value) in enumerate(stages):
        text = "\n".join(f"{n.phase:<9}{n.name:<40}{n.op:<28}{n.inputs} {n.shape}"
                         for n in getattr(value, "nodes", {}).values()) if hasattr(value, "nodes") else repr(value)
        (directory / f"{k:02d}-{stage.replace(' ', '_').replace('+', 'and')}.txt").write_text(text + "\n")
    (directory / f"{name}.c").write_text(code.source)
    (directory / f"{name}.h").write_text(code.header)
