"""The build cache: a fresh process reuses the library without starting the compiler."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, subprocess, sys, time
    started = []
    real_run, real_popen = subprocess.run, subprocess.Popen
    class Spy(real_popen):
        def __init__(self, *args, **kwargs):
            started.append(str(args[0]))
            super().__init__(*args, **kwargs)
    subprocess.Popen = Spy
    sys.path.insert(0, {examples!r})
    from classifier import model
    import nncc, numpy as np
    graph = model()
    if {tweak!r}:
        graph.nodes["loss"]["reduction"] = "sum"
    t0 = time.perf_counter()
    trainer = nncc.compile(graph, batch_size=64)
    x = np.zeros((64, 784), np.float32); y = np.zeros(64, np.int32)
    trainer.step(x=x, y=y)
    print(json.dumps({{"hit": trainer.report.cache_hit, "processes": started,
                      "seconds": time.perf_counter() - t0, "c_parser": "cffi.cparser" in sys.modules}}))
""")


def run_fresh(tmp_path, tweak=False):
    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    env = {**os.environ, "NNCC_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(examples=examples, tweak=tweak)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_hits_without_running_the_compiler(tmp_path):
    first = run_fresh(tmp_path)
    assert first["hit"] is False and first["processes"], "the first build must compile"
    second = run_fresh(tmp_path)
    assert second["hit"] is True
    assert second["processes"] == []  # no compiler, no process of any kind
    assert second["c_parser"] is False  # the entry's pre-parsed FFI module, not cffi's C parser


def test_an_entry_without_its_ffi_module_still_loads(tmp_path):
    """Entries built before the pre-parsed FFI module existed: the declarations are parsed."""
    run_fresh(tmp_path)
    (module,) = tmp_path.glob("*/*/interface_ffi.py")
    module.unlink()
    again = run_fresh(tmp_path)
    assert again["hit"] is True and again["c_parser"] is True


def test_changed_attribute_misses(tmp_path):
    run_fresh(tmp_path)
    changed = run_fresh(tmp_path, tweak=True)
    assert changed["hit"] is False


def test_gemm_is_compiled_once_for_all_models(tmp_path):
    """The GEMM's parts are compiled by the first build on a machine (in parallel with the
    model) and then shared: another model compiles only itself."""
    from nncc.runtime.build import GEMM_PARTS

    compiles = lambda run: [p for p in run["processes"] if "'-c'" in p]
    first = compiles(run_fresh(tmp_path))
    assert len(first) == 1 + len(GEMM_PARTS)
    assert len(list((tmp_path / "gemm").glob("*.o"))) == len(GEMM_PARTS)
    second = compiles(run_fresh(tmp_path, tweak=True))
    assert len(second) == 1 and "NNCC_EXTERNAL_GEMM" in second[0]


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from nncc.runtime.build import cache_dir

    monkeypatch.delenv("NNCC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "nncc"
    monkeypatch.setenv("NNCC_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("NNCC_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(cache_dir()).endswith(os.path.join(".cache", "nncc"))


def test_concurrent_builds_of_one_model_agree(tmp_path):
    """Several processes building the same model at once all succeed with one entry."""
    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    env = {**os.environ, "NNCC_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT.format(examples=examples, tweak=False)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
    entries = [d for d in tmp_path.rglob("libmodel.so")]
    assert len(entries) == 1
    assert not [d for d in tmp_path.rglob(".*") if d.is_dir()], "temporary build dirs left behind"


def test_compiler_failure_names_the_kernel(monkeypatch, tmp_path):
    from nncc import BuildError
    from nncc.runtime.build import build

    monkeypatch.setenv("NNCC_CACHE_DIR", str(tmp_path))
    source = "int ok(void) { return 0; }\n/* h1 = relu(add(mm0, b0))  [n, 16] */\nstatic void fwd_h1(void)\n{\n    undefined_thing;\n}\n"
    from nncc.compiler.emit import CSource

    with pytest.raises(BuildError, match=r"(?s)line 5.*fwd_h1.*relu\(add\(mm0, b0\)\)"):
        build("a program fingerprint", lambda: CSource(source, "", ""), "broken")


def test_a_compiler_without_openmp_still_builds_every_model(monkeypatch, tmp_path):
    """A compiler that cannot build OpenMP code (Apple's clang without libomp) builds the
    model without -fopenmp, says so (a warning at the caller, a line of the report), and
    trains to the bits of the threaded build."""
    import warnings

    import numpy as np

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import classifier
    import nncc

    fake = tmp_path / "cc-without-openmp"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do\n  [ "$a" = -fopenmp ] && { echo "cc: unsupported option '
                    '-fopenmp" >&2; exit 1; }\ndone\nexec gcc "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("NNCC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    states = []
    for cc in ("gcc", str(fake)):
        monkeypatch.setenv("CC", cc)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = nncc.compile(classifier.model(), batch_size=64, seed=1)
        said = [w for w in caught if "cannot build OpenMP code" in str(w.message)]
        assert len(said) == (cc != "gcc")
        assert all(w.filename == __file__ for w in said)  # at the caller's nncc.compile, not in nncc
        assert ("threads          one" in str(trainer.report)) == (cc != "gcc")
        for _ in range(3):
            trainer.step(x=x, y=y)
        states.append({k: v.copy() for k, v in trainer.params.items()})
    for name in states[0]:
        assert np.array_equal(states[0][name].view(np.uint32), states[1][name].view(np.uint32)), name


def test_an_unusable_cache_directory_is_a_clear_error(monkeypatch, tmp_path):
    """A cache path that cannot be a directory (or is not writable) names itself and the fix."""
    from nncc import BuildError
    from nncc.compiler.emit import CSource
    from nncc.runtime.build import build

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("NNCC_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(BuildError, match=r"build cache in .*a_file/cache.*set NNCC_CACHE_DIR"):
        build("a program fingerprint", lambda: CSource("int ok(void) { return 0; }\n", "", ""), "tiny")


def test_a_compiler_that_rejects_a_flag_is_named_with_the_flag(monkeypatch, tmp_path):
    """Neither GCC nor clang (a compiler without -ffp-contract): one line that names the
    compiler, the flag and the way out, not 'an nncc bug'."""
    from nncc import BuildError
    from nncc.compiler.emit import CSource
    from nncc.runtime.build import build

    fake = tmp_path / "oldcc"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do\n  [ "$a" = -ffp-contract=off ] && { echo "oldcc: error: '
                    'unrecognized command-line option \'-ffp-contract=off\'" >&2; exit 1; }\ndone\nexec gcc "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("NNCC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BuildError, match=r"oldcc\) does not take nncc's flag -ffp-contract=off.*GCC or clang"):
        build("a program fingerprint", lambda: CSource("int ok(void) { return 0; }\n", "", ""), "tiny")
