"""Build the emitted C into a shared library, through a content-addressed cache.

The key hashes everything that shapes the library: the C source and header, the compiler's
identity and the flags it takes (OpenMP or not), the CPU (we build with -march=native), the
platform and the nncc version. A hit never runs the compiler (one exception: a compiler that
had no OpenMP is asked again, once per process, whether it has it now). Entries are built in
a private temporary directory and published with an atomic rename, so concurrent builders of
the same model never see a half-written entry and never delete one another's.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cffi import FFI

from nncc.compiler.emit import GEMM_TEMPLATES
from nncc.compiler.errors import BuildError

OPENMP_FLAG = "-fopenmp"  # left out where the compiler has no OpenMP (see toolchain_flags)
# -ffp-contract=off: every expression is rounded as written, as the NumPy reference rounds
# it (GCC's default fuses a * b + c where its passes happen to find one, so the same
# update could round once in one kernel and twice in another); the GEMM and vmath write
# their fused multiply-adds explicitly. -Werror=implicit-function-declaration: a routine
# that no included library declares fails the build here, as it does by default on GCC 14,
# instead of being a warning nobody reads.
COMPILE_FLAGS = ("-O3", "-march=native", "-std=gnu99", "-fPIC", OPENMP_FLAG, "-fno-math-errno", "-ffp-contract=off",
                 "-Werror=implicit-function-declaration",
                 "-Wall", "-Wno-unused-function", "-Wno-unused-variable")
LINK_FLAGS = ("-shared", OPENMP_FLAG)
FLAGS = COMPILE_FLAGS + LINK_FLAGS
GEMM_FILES = tuple(Path(__file__).resolve().parent.parent / "templates" / "kernels" / name for name in GEMM_TEMPLATES)
GEMM_PRELUDE = """/* The GEMM of nncc's generated modules, compiled once per machine (runtime/build.py). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#define NNCC_GEMM_LINKAGE __attribute__((visibility("hidden")))
#define NNCC_COMPILE_GEMM 1
"""
GEMM_PARTS = (1, 2)  # NNCC_GEMM_PART: the micro-kernels, the rest (see gemm.c.j2)
LIBRARY = "libmodel.so"
CDEF = "interface.cdef"  # the header's declarations, as cffi reads them
# The same declarations already parsed, as a cffi out-of-line ABI module: loading a cached
# library then needs no C parser (creating the first FFI() imports it: ~20 ms of a ~40 ms
# warm start).
FFI_MODULE = "interface_ffi"


def cache_dir() -> Path:
    """$NNCC_CACHE_DIR, else $XDG_CACHE_HOME/nncc, else ~/.cache/nncc."""
    if os.environ.get("NNCC_CACHE_DIR"):
        return Path(os.environ["NNCC_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "nncc"
    return Path.home() / ".cache" / "nncc"


def compiler_command():
    return shlex.split(os.environ.get("CC", "cc"))


_OPENMP_KNOWN = {}  # compiler command -> whether it builds OpenMP code, as this process found


def openmp_supported(cc: tuple) -> bool:
    """Whether the compiler command `cc` builds OpenMP code. Assumed, so a compiler that has
    it costs nothing to ask; a build that fails for want of it (Apple's clang without libomp)
    leaves a mark in the cache directory, and while the mark is there the compiler is asked
    again once per process (a ~30 ms probe), so installing the runtime takes effect."""
    if cc not in _OPENMP_KNOWN:
        mark = _no_openmp_mark(cc)
        _OPENMP_KNOWN[cc] = not mark.exists() or _probe_openmp(cc)
        if _OPENMP_KNOWN[cc]:
            mark.unlink(missing_ok=True)
    return _OPENMP_KNOWN[cc]


def _no_openmp_mark(cc: tuple) -> Path:
    toolchain = hashlib.sha256(f"{' '.join(cc)}\0{toolchain_identity(cc)}".encode()).hexdigest()
    return cache_dir() / "toolchains" / f"{toolchain}.no-openmp"


def _probe_openmp(cc: tuple) -> bool:
    """Whether `cc` compiles and links a file that uses OpenMP."""
    with tempfile.TemporaryDirectory(prefix="nncc-openmp-") as d:
        (Path(d) / "probe.c").write_text("#include <omp.h>\nint nncc_probe(void) { return omp_get_max_threads(); }\n")
        return subprocess.run([*cc, OPENMP_FLAG, "-shared", "-fPIC", "probe.c", "-o", "probe.so"], cwd=d,
                              capture_output=True).returncode == 0


class _NoOpenMP(Exception):
    """A build with OpenMP failed, and the compiler cannot build OpenMP code at all."""


def toolchain_flags(cc: tuple, flags) -> list:
    """`flags` as `cc` can take them: without OpenMP where it has none (every OpenMP use in
    the C is a pragma, or guarded by _OPENMP: the kernels then simply run on one thread,
    with the same results), and then without warnings about the pragmas it ignores."""
    if openmp_supported(cc):
        return list(flags)
    return [f for f in flags if f != OPENMP_FLAG] + ["-Wno-unknown-pragmas"]


@functools.lru_cache(maxsize=None)
def toolchain_identity(cc: tuple) -> str:
    """The compiler binary (resolved path, size, mtime: no process is started, so a cache
    hit runs nothing) and this CPU's model and flags (we build with -march=native)."""
    found = shutil.which(cc[0])
    if found is None:
        raise BuildError(f"no C compiler found ({cc[0]!r}): install gcc or set $CC")
    binary = os.path.realpath(found)
    stat = os.stat(binary)
    banner = f"{binary} {stat.st_size} {stat.st_mtime_ns}"
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = " ".join(sorted(set(re.findall(r"^(?:model name|flags)\s*:\s*(.*)$", info, re.M))))
    except OSError:
        cpu = os.uname().machine
    return banner + cpu


@dataclass
class BuildResult:
    library: Path
    directory: Path
    key: str
    cache_hit: bool
    seconds: float
    name: str
    openmp: bool  # built with OpenMP (else its kernels run on one thread)

    @property
    def cdef(self) -> str:
        return (self.directory / CDEF).read_text()

    @property
    def source(self) -> str:
        return (self.directory / f"{self.name}.c").read_text()

    @property
    def header(self) -> str:
        return (self.directory / f"{self.name}.h").read_text()


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """A hash of nncc's own compiler and templates: any change to them changes every key."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for pattern in ("compiler/**/*.py", "templates/**/*.j2"):
        for path in sorted(root.glob(pattern)):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(program_fingerprint: str, name: str) -> str:
    """Everything that shapes the library: the planned program (which determines the C),
    nncc's code and templates, the model name, the compiler, its flags, the CPU and OS."""
    from nncc import __version__

    cc = tuple(compiler_command())
    h = hashlib.sha256()
    system = os.uname()  # not platform.platform(): that starts `uname -p`
    for part in (program_fingerprint, code_fingerprint(), name, " ".join(cc), " ".join(toolchain_flags(cc, FLAGS)),
                 toolchain_identity(cc), system.sysname, system.release, system.machine, __version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def build(program_fingerprint: str, emit, name="model") -> BuildResult:
    """The cached library for this program; on a miss, `emit()` gives the C (a CSource)
    and the compiler runs. A hit emits nothing and starts no process."""
    try:
        try:
            return _build(program_fingerprint, emit, name)
        except _NoOpenMP:  # marked now: the key and the flags are those without OpenMP
            return _build(program_fingerprint, emit, name)
    except OSError as error:  # the cache directory: not writable, not a directory, disk full
        raise BuildError(f"cannot use nncc's build cache in {cache_dir()}: {error.strerror or error}"
                         f"{f' ({error.filename})' if error.filename else ''}; set NNCC_CACHE_DIR to a "
                         f"writable directory") from error


def _build(program_fingerprint, emit, name):
    start = time.perf_counter()
    key = cache_key(program_fingerprint, name)
    openmp = openmp_supported(tuple(compiler_command()))  # known by now: the key depends on it
    final = cache_dir() / key[:2] / key
    library = final / LIBRARY
    if library.exists():
        return BuildResult(library, final, key, True, time.perf_counter() - start, name, openmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
    try:
        cdef = _compile_library(work, name, emit)
        _write_ffi_module(work, cdef)
        try:
            os.rename(work, final)  # atomic publish; fails if another process won the race
        except OSError:
            if not library.exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return BuildResult(library, final, key, False, time.perf_counter() - start, name, openmp)


def _compile_library(work: Path, name: str, emit) -> str:
    """Compile the model (without its GEMM) and, unless this machine has them cached, the
    GEMM's parts, in parallel processes; link them into LIBRARY; return the declarations.
    The GEMM's compiles start first, and `emit()` writes the model's C while they run. The
    GEMM objects are content-keyed and published atomically, so they are compiled once per
    machine and toolchain."""
    cc = compiler_command()
    gemm = _gemm_object_paths()
    compile_flags = toolchain_flags(tuple(cc), COMPILE_FLAGS)
    jobs = {}
    for part, obj in gemm.items():
        if not obj.exists():
            (work / f"gemm{part}.c").write_text(gemm_source(part))
            jobs[part] = [*cc, *compile_flags, "-c", f"gemm{part}.c", "-o", f"gemm{part}.o"]
    procs = {k: subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, cmd in jobs.items()}
    try:
        code = emit()
        (work / f"{name}.c").write_text(code.source)
        (work / f"{name}.h").write_text(code.header)
        (work / CDEF).write_text(code.cdef)
        procs["model"] = subprocess.Popen([*cc, *compile_flags, "-DNNCC_EXTERNAL_GEMM", "-c", f"{name}.c", "-o",
                                           "model.o"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        FFI()  # the first one imports cffi's C parser (~20 ms, for _write_ffi_module): now, while gcc runs
    except BaseException:  # no compiler left writing into the directory about to be removed
        for proc in procs.values():
            proc.kill()
            proc.communicate()
        raise
    stderr = {k: p.communicate()[1] for k, p in procs.items()}
    errors = {k: stderr[k] for k, p in procs.items() if p.returncode != 0}
    if errors and OPENMP_FLAG in compile_flags and not _probe_openmp(tuple(cc)):
        mark = _no_openmp_mark(tuple(cc))
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()  # an empty file: its existence is the answer, so writers cannot collide
        _OPENMP_KNOWN[tuple(cc)] = False  # known now: the retry builds without, asking nothing more
        raise _NoOpenMP()
    rejected = next((m for e in errors.values() for m in [REJECTED_FLAG.search(e)] if m), None)
    if rejected:
        raise BuildError(f"the C compiler ({' '.join(cc)}) does not take nncc's flag {rejected.group(1)}: nncc "
                         f"builds with GCC or clang (set CC to one)")
    if "model" in errors:
        raise BuildError(_compiler_failure(errors["model"], code.source, name))
    if errors:
        raise BuildError(f"internal error: the GEMM failed to compile (please report):\n{next(iter(errors.values()))[:2000]}")
    for part, obj in gemm.items():
        if part in jobs:
            obj.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".gemm-", suffix=".o", dir=obj.parent)
            os.close(fd)
            shutil.copyfile(work / f"gemm{part}.o", tmp)
            os.replace(tmp, obj)  # atomic: a concurrent builder sees the old or the new, both whole
    link = [*cc, *toolchain_flags(tuple(cc), LINK_FLAGS), "-o", LIBRARY, "model.o", *map(str, gemm.values()), "-lm"]
    proc = subprocess.run(link, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"internal error: linking failed (please report):\n{proc.stderr[:2000]}")
    return code.cdef


def gemm_text() -> str:
    """The GEMM's C, its files put together (declarations first)."""
    return "".join(path.read_text() for path in GEMM_FILES)


def gemm_source(part: int) -> str:
    """The C of one part of the GEMM (one of GEMM_PARTS), as compiled for every model."""
    return f"{GEMM_PRELUDE}#define NNCC_GEMM_PART {part}\n{gemm_text()}"


def _gemm_object_paths() -> dict:
    """The cached object of each part of the GEMM: {part: path}."""
    cc = tuple(compiler_command())
    h = hashlib.sha256()
    system = os.uname()
    for field in (gemm_text(), GEMM_PRELUDE, " ".join(cc), " ".join(toolchain_flags(cc, COMPILE_FLAGS)),
                  toolchain_identity(cc), system.sysname, system.release, system.machine):
        h.update(field.encode())
        h.update(b"\0")
    return {part: cache_dir() / "gemm" / f"{h.hexdigest()}-{part}.o" for part in GEMM_PARTS}


# How GCC and clang say they do not know a flag (a compiler that is neither fails on ours).
REJECTED_FLAG = re.compile(r"(?:unrecognized command[- ]line option|unknown argument|unsupported option)"
                           r"[:\s]*['‘`\"]?(-[\w=.+-]+)")


def _compiler_failure(stderr, source, name):
    """Name the first failing line's function (a kernel: node and template) without dumping the file."""
    lines = source.splitlines()
    first = re.search(rf"{re.escape(name)}\.c:(\d+):\d*:? ?(?:fatal )?error: (.*)", stderr)
    if not first:
        return f"internal error: the C compiler failed (please report):\n{stderr[:2000]}"
    line_no, message = int(first.group(1)), first.group(2)
    function = next((l for l in reversed(lines[:line_no]) if re.match(r"^(static |int |void )", l)), "?")
    comment = next((l.strip() for l in reversed(lines[:line_no]) if l.strip().startswith("/*")), "")
    return (f"internal error (an nncc bug, please report): the generated C failed to compile at line "
            f"{line_no}: {message}\n  in: {function.strip()}\n  kernel: {comment}\n  source line: "
            f"{lines[line_no - 1].strip() if line_no <= len(lines) else ''}")


def _write_ffi_module(work: Path, cdef: str):
    builder = FFI()
    builder.cdef(cdef)
    builder.set_source(FFI_MODULE, None, compiler_verbose=False)  # ABI mode: types only, no C
    builder.emit_python_code(str(work / f"{FFI_MODULE}.py"))


def load_library(library: Path, cdef: str):
    """(ffi, lib) for a built library: the entry's pre-parsed FFI module when it has one
    (entries built by an older nncc may not), else the declarations parsed now."""
    module = library.parent / f"{FFI_MODULE}.py"
    if module.exists():
        spec = importlib.util.spec_from_file_location(f"nncc_{library.parent.name}_ffi", module)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        ffi = loaded.ffi
    else:
        ffi = FFI()
        ffi.cdef(cdef)
    lib = ffi.dlopen(str(library))
    pin_openmp_runtime()
    return ffi, lib


# OpenMP runtimes a built library may have loaded: GCC's, LLVM's (clang), Intel's.
OPENMP_RUNTIMES = ("libgomp.so.1", "libomp.so.5", "libomp.so", "libiomp5.so")


def _one_thread_after_fork():
    """GCC's OpenMP runtime is not fork-safe: in the child of a process whose kernels ran on
    threads, the next parallel region waits forever for threads that did not survive the fork
    (a `multiprocessing` worker, say). So a child runs every kernel on one thread: the same
    results, as no sum is ever split between threads. (LLVM's runtime handles fork itself.)"""
    import ctypes

    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOW | os.RTLD_NOLOAD).omp_set_num_threads(1)
    except (OSError, AttributeError):
        pass  # not loaded: nothing ran on its threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def pin_openmp_runtime():
    """Keep the loaded OpenMP runtime loaded for good. cffi dlclose()s libraries at
    interpreter exit, which would unload the runtime under its still-running idle worker
    threads: a segfault at exit. (Run after every load: a clang-built model brings libomp
    into a process that so far had only libgomp.)"""
    import ctypes

    for runtime in OPENMP_RUNTIMES:
        try:
            ctypes.CDLL(runtime, mode=os.RTLD_NOW | os.RTLD_NOLOAD | os.RTLD_NODELETE)
        except OSError:
            pass  # not loaded, nothing to pin
