"""The emitted C stands on its own: one file and its header build into a plain C program."""
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nncc
from nncc.runtime.build import COMPILE_FLAGS, toolchain_flags

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import classifier  # noqa: E402

MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "classifier.h"

int main(void)
{
    float *arena = aligned_alloc(64, ((size_t)nncc_arena_floats() * sizeof(float) + 63) / 64 * 64);
    float *x = calloc(4 * 784, sizeof(float));
    int32_t y[4] = {0, 1, 2, 3};
    nncc_runtime rt = {0};
    rt.lr = 0.1;
    for (int64_t i = 0; i < nncc_arena_floats(); i++)
        arena[i] = 0.001f * (float)(i % 7);
    for (int i = 0; i < 3; i++)
        if (nncc_train_step(&rt, arena, 4, x, y) != 0)
            return 1;
    y[2] = 12;
    int code = nncc_train_step(&rt, arena, 4, x, y);  /* a bad label: an error code, no crash */
    printf("%.6f %lld %d %lld\n", rt.loss, (long long)rt.step, code, (long long)rt.error_index);
    return 0;
}
"""


def test_the_generated_file_builds_into_a_plain_c_program(tmp_path):
    trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=8, name="classifier")
    (tmp_path / "classifier.c").write_text(trainer.source)
    (tmp_path / "classifier.h").write_text(trainer.header)
    (tmp_path / "main.c").write_text(MAIN)
    assert "Python.h" not in trainer.source
    subprocess.run(["cc", "-O2", "-std=gnu99", "-fopenmp", "-o", "program", "main.c", "classifier.c", "-lm"],
                   cwd=tmp_path, check=True)
    out = subprocess.run(["./program"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.split()
    loss, steps, code, row = float(out[0]), int(out[1]), int(out[2]), int(out[3])
    assert np.isfinite(loss) and steps == 3
    assert code != 0 and row == 2


def test_kernels_are_named_after_nodes_with_shape_comments():
    trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=8)
    src = trainer.source
    assert "static void fwd_h(" in src and "/* h = relu(add(matmul(x, fc1.W), fc1.b))  [n, 128] */" in src
    assert "float *const fc1_W = arena + 0;  /* param fc1.W [784, 128] */" in src
    assert "-ffast-math" not in " ".join(nncc.runtime.build.FLAGS)


def test_fit_runs_the_longest_one_thread_stretch_while_the_team_gathers():
    """Between the forward GEMM and the weight update GEMM (both on the team), the classifier's
    step runs only one-thread kernels (small GEMMs, the loss, and the small params' updates,
    moved up from after fc1.W's update to join them); fit's next batch is gathered meanwhile.
    A batch too small to gather on the team keeps one staging buffer and no region."""
    import re

    from nncc.compiler.ops.linalg import GEMM_PARALLEL_MIN_FLOPS

    trainer = nncc.compile(classifier.model(), outputs=["logits"], batch_size=64)
    src = trainer.source
    assert "while one runs 10 one-thread kernels: fwd_logits, nncc_xent_loss," in str(trainer.report)
    step = src[src.index("static int train_step("):src.index("int nncc_train_step(")]
    before, region = step.split("#pragma omp parallel\n")
    fit, rest = region.split("} else {  /* step()")
    alone = fit.split("nncc_gather_rows(next);")[0]
    segment, after = rest.split("    if (code)\n        return code;")
    gemm = r"nncc_sgemm\w*\(\d, \d, (\w+), (\w+), (\w+),"
    flops = [2 * np.prod([64 if d == "n" else int(d) for d in dims]) for dims in re.findall(gemm, alone)]
    assert len(flops) == 3 and max(flops) < GEMM_PARALLEL_MIN_FLOPS
    assert "update_fc1_b(" in alone and "update_logits_b(" in alone and not re.findall(r"\bupdate_\w+\(", after)
    assert "nncc_xent_loss(" in alone and "nncc_xent_grad(" in alone
    assert "784, 128, 784" not in alone and "nncc_sgemm_epilogue(0, 0, n, 128, 784" in before
    assert "nncc_sgemm_update(1, 0, 784, 128, n" in after
    assert "goto alone_done;" in alone and "return 1;" not in alone
    # step(), with nothing to gather, runs the same kernels on every thread: the small GEMMs
    # over the batch on each thread's rows, logits.W's update on each thread's share of its
    # rows, the loss on the first thread, a barrier after each label check
    assert "nncc_sgemm_epilogue(0, 0, row_hi - row_lo, 10, 128, h + row_lo * 128" in segment
    assert "nncc_sgemm_epilogue(0, 1, row_hi - row_lo, 128, 10" in segment
    assert "nncc_thread_share(128, NNCC_TEAM_MIN_ROWS, &lo, &hi); nncc_sgemm_update(1, 0, hi - lo, 10" in segment
    assert segment.count("code = 1; }") == 1 and "goto alone_done" not in segment
    assert segment.count("#pragma omp barrier") == 4 and segment.count("goto segment_done;") == 2
    assert ("step             runs those on the whole team: 2 on each thread's rows (at least 16 each), 3 shared "
            "out, 5 on the first thread, 4 barriers") in str(trainer.report)
    small = nncc.compile(classifier.model(), outputs=["logits"], batch_size=8)
    assert "nncc_gather *next" not in small.source and "#pragma omp parallel\n" not in small.source
    assert "float *const x_batch[] = {(float *)(arena + " in small.source and "cur ^ 1" not in small.source
    assert "one-thread kernels" not in str(small.report)


def test_one_thread_kernels_move_up_only_past_kernels_they_do_not_depend_on():
    from types import SimpleNamespace

    from nncc.compiler.lower import Kernel
    from nncc.compiler.threads import lengthen_alone_run

    graph = {n: SimpleNamespace(attrs={}) for n in "abcdefghw"}
    graph["w"].attrs["writes"] = "a"  # an in-place update of a

    def k(name, reads, writes, one_thread=True):
        return Kernel(name=name, nodes=(name,), reads=tuple(reads), writes=tuple(writes), comment="",
                      one_thread=one_thread)

    team = k("team", "b", "c", one_thread=False)      # after the run: reads b, writes c
    kernels = [*(k(f"head{i}", "x", "b") for i in range(5)), team,  # the longest run: 5
               k("free", "b", "d"),                     # reads b: may pass team
               k("needs_c", "c", "e"),                  # reads what team writes: stays
               k("clobbers_b", "d", "b"),               # writes what team reads: stays
               k("in_place", "d", "w"),                 # writes a: independent of team: moves
               k("multi", "d", "f", one_thread=False)]  # on the team: stays
    order = [kernel.name for kernel in lengthen_alone_run(graph, kernels)]
    assert order[5:] == ["free", "in_place", "team", "needs_c", "clobbers_b", "multi"]


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
@pytest.mark.parametrize("example", ["classifier", "regression", "norm_dropout"])
def test_the_emitted_c_compiles_without_a_warning(tmp_path, compiler, example):
    """With nncc's flags and -Werror, the GEMM included (one translation unit): a routine some
    library calls but no included library declares, or anything else a compiler warns about,
    fails here. Every compiler found on the machine (clang is how macOS users build)."""
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    module = importlib.import_module(example)
    trainer = nncc.compile(module.model(), outputs=module.outputs, optimizer=module.optimizer,
                           batch_size=module.batch_size, name=example)
    (tmp_path / f"{example}.c").write_text(trainer.source)
    (tmp_path / f"{example}.h").write_text(trainer.header)
    flags = toolchain_flags((compiler,), COMPILE_FLAGS)  # as nncc builds: -fopenmp where the compiler has it
    proc = subprocess.run([compiler, *flags, "-Werror", "-c", f"{example}.c", "-o", f"{example}.o"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[:3000]


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
@pytest.mark.parametrize("example", ["classifier", "regression", "norm_dropout"])
def test_gcc_and_clang_builds_train_to_the_same_bits(monkeypatch, example):
    """Every expression rounds as written (-ffp-contract=off, explicit FMAs, no reassociation),
    so the compiler that builds the module does not change a bit of training."""
    module = importlib.import_module(example)
    feeds, n = module.data(), module.batch_size
    states = []
    for compiler in ("gcc", "clang"):
        monkeypatch.setenv("CC", compiler)
        trainer = nncc.compile(module.model(), outputs=module.outputs, optimizer=module.optimizer,
                               batch_size=n, seed=3)
        for k in range(3):
            trainer.step(**{name: value[k * n:(k + 1) * n] for name, value in feeds.items()})
        states.append({name: value.copy() for name, value in {**trainer.params, **trainer.buffers}.items()})
    for name in states[0]:
        assert np.array_equal(states[0][name].view(np.uint32), states[1][name].view(np.uint32)), name
