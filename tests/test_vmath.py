"""Tests for the vectorisable float32 math library templates/kernels/vmath.c.j2.

The library is pasted (as the Jinja include would do) into a small C file with exported
array wrappers, built with the flags used for generated modules (no -ffast-math), and
called through cffi in ABI mode.  Checked here:

* max ulp error against a float64 numpy reference over a strided sweep of float32 bit
  patterns covering each function's whole interesting range (subnormal inputs and
  subnormal outputs included), plus dense sweeps of the delicate regions;
* exact special values (NaN, +-inf, +-0, overflow/underflow, domain errors);
* that GCC auto-vectorises plain and mixed loops over the functions, and that the
  library makes no libm calls.
"""
import pathlib
import platform
import re
import shutil
import subprocess

import numpy as np
import pytest

cffi = pytest.importorskip("cffi")

TEMPLATES = pathlib.Path(__file__).resolve().parents[1] / "templates"
VMATH = TEMPLATES / "kernels" / "vmath.c.j2"
CFLAGS = ["-O3", "-march=native", "-std=gnu99", "-fPIC", "-shared", "-fopenmp"]

FUNCS = ("exp", "tanh", "sigmoid", "log", "log1p")

# Upper bounds on the max error (ulp of the float32 result; for subnormal results the ulp
# is the subnormal spacing 2^-149).  Measured maxima over *every* float32 input in the
# swept ranges: exp 0.90, tanh 1.50, sigmoid 2.41, log 0.89, log1p 0.97.
MAX_ULP = {"exp": 1.1, "tanh": 1.75, "sigmoid": 2.75, "log": 1.1, "log1p": 1.25}

PRELUDE = """#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
"""
# One wrapper per line, so that -fopt-info messages can be matched to the loop.
WRAPPERS = {
    "v_exp": "void v_exp(const float *restrict x, float *restrict y, long n) "
             "{ for (long i = 0; i < n; i++) y[i] = nncc_expf(x[i]); }",
    "v_tanh": "void v_tanh(const float *restrict x, float *restrict y, long n) "
              "{ for (long i = 0; i < n; i++) y[i] = nncc_tanhf(x[i]); }",
    "v_sigmoid": "void v_sigmoid(const float *restrict x, float *restrict y, long n) "
                 "{ for (long i = 0; i < n; i++) y[i] = nncc_sigmoidf(x[i]); }",
    "v_log": "void v_log(const float *restrict x, float *restrict y, long n) "
             "{ for (long i = 0; i < n; i++) y[i] = nncc_logf(x[i]); }",
    "v_log1p": "void v_log1p(const float *restrict x, float *restrict y, long n) "
               "{ for (long i = 0; i < n; i++) y[i] = nncc_log1pf(x[i]); }",
    # mixed expressions of the kind generated kernels contain
    "m_tanh_grad": "void m_tanh_grad(const float *restrict x, const float *restrict g, float *restrict y, long n) "
                   "{ for (long i = 0; i < n; i++) { float t = nncc_tanhf(x[i]); y[i] = g[i] * (1 - t * t); } }",
    "m_silu_grad": "void m_silu_grad(const float *restrict x, const float *restrict g, float *restrict y, long n) "
                   "{ for (long i = 0; i < n; i++) { float s = nncc_sigmoidf(x[i]); "
                   "y[i] = g[i] * s * (1 + x[i] * (1 - s)); } }",
    "m_softplus": "void m_softplus(const float *restrict x, const float *restrict g, float *restrict y, long n) "
                  "{ (void)g; for (long i = 0; i < n; i++) { float v = x[i]; "
                  "y[i] = (v > 0 ? v : 0.0f) + nncc_log1pf(nncc_expf(-fabsf(v))); } }",
    "m_bce": "void m_bce(const float *restrict x, const float *restrict g, float *restrict y, long n) "
             "{ for (long i = 0; i < n; i++) { float p = nncc_sigmoidf(x[i]); "
             "y[i] = -(g[i] * nncc_logf(p) + (1 - g[i]) * nncc_log1pf(-p)); } }",
    "m_shift_exp": "void m_shift_exp(const float *restrict x, const float *restrict g, float *restrict y, long n) "
                   "{ for (long i = 0; i < n; i++) y[i] = nncc_expf(x[i] - g[0]) * g[i]; }",
}
MIXED = [k for k in WRAPPERS if k.startswith("m_")]
CDEF = "".join(f"void {k}(const float *, float *, long);\n" for k in WRAPPERS if k.startswith("v_")) + \
       "".join(f"void {k}(const float *, const float *, float *, long);\n" for k in MIXED)


def _vmath_text():
    return VMATH.read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not available")
    d = tmp_path_factory.mktemp("vmath")
    body = PRELUDE + _vmath_text() + "\n"
    lines = {}
    for name, code in WRAPPERS.items():
        lines[name] = body.count("\n") + 1
        body += code + "\n"
    src, so = d / "vmath_test.c", d / "vmath_test.so"
    src.write_text(body)
    cmd = ["gcc", *CFLAGS, "-Wall", "-Wextra", "-Werror", "-fopt-info-vec-optimized",
           str(src), "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(str(so))
    return {"ffi": ffi, "lib": lib, "opt_info": proc.stderr, "lines": lines, "so": so}


def _call(built, name, x, g=None):
    ffi, lib = built["ffi"], built["lib"]
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    px, py = ffi.cast("float *", x.ctypes.data), ffi.cast("float *", y.ctypes.data)
    if g is None:
        getattr(lib, name)(px, py, x.size)
    else:
        g = np.ascontiguousarray(g, dtype=np.float32)
        getattr(lib, name)(px, ffi.cast("float *", g.ctypes.data), py, x.size)
    return y


# ---------------------------------------------------------------- references (float64)

def _sigmoid64(x):
    t = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + t), t / (1.0 + t))


REF = {"exp": np.exp, "tanh": np.tanh, "sigmoid": _sigmoid64, "log": np.log, "log1p": np.log1p}


def ulp_error(y, ref):
    """|y - ref| in ulps of the float32 result ref (subnormal spacing below FLT_MIN).

    A reference beyond the float32 range that rounds to +-inf counts as exact when y is
    that infinity; otherwise an infinite y is measured as +-2^128.  A NaN result is an
    infinite error unless the reference is NaN too."""
    y = np.asarray(y, dtype=np.float32)
    with np.errstate(over="ignore"):
        ref_rounded = ref.astype(np.float32)
    exact_inf = np.isinf(y) & (y == ref_rounded)
    y64 = y.astype(np.float64)
    y64[np.isinf(y64)] = np.copysign(2.0 ** 128, y64[np.isinf(y64)])
    _, e = np.frexp(ref)
    e[ref == 0] = -1000                               # ulp(0) is the subnormal spacing
    ulp = np.ldexp(1.0, np.maximum(e - 1, -126) - 23)
    with np.errstate(invalid="ignore"):
        err = np.abs(y64 - ref) / ulp
    err[exact_inf] = 0.0
    err[np.isnan(y64) & np.isnan(ref)] = 0.0
    err[np.isnan(y64) != np.isnan(ref)] = np.inf      # a NaN where none belongs (or missing)
    return err


def _bits(v):
    return int(np.float32(v).view(np.uint32))


NEG = 0x80000000          # bit pattern of -0.0
INF_BITS = 0x7F800000
STRIDE = 61               # odd stride: every mantissa low-bit pattern gets visited

SPARSE = 9973            # for the saturated tails (results 0, 1 or inf)

# (first bit pattern, end bit pattern, stride); a range never crosses the sign bit.
SWEEPS = {
    "exp": [(0, _bits(89.0), STRIDE), (NEG, _bits(-104.0), STRIDE),
            (_bits(-104.0), _bits(-86.0), 1),              # subnormal results, dense
            (_bits(88.0), _bits(89.0), 1),                 # overflow boundary, dense
            (_bits(89.0), INF_BITS + 1, SPARSE), (_bits(-104.0), NEG | INF_BITS + 1, SPARSE)],
    "tanh": [(0, _bits(10.0), STRIDE), (NEG, _bits(-10.0), STRIDE),
             (_bits(0.5), _bits(0.75), 1),                 # around the 0.625 switch, dense
             (_bits(10.0), INF_BITS + 1, SPARSE), (_bits(-10.0), NEG | INF_BITS + 1, SPARSE)],
    "sigmoid": [(0, _bits(20.0), STRIDE), (NEG, _bits(-105.0), STRIDE),
                (_bits(-6.0), _bits(-4.0), 1),
                (_bits(20.0), INF_BITS + 1, SPARSE), (_bits(-105.0), NEG | INF_BITS + 1, SPARSE)],
    "log": [(1, INF_BITS + 1, STRIDE),
            (_bits(0.5), _bits(2.0), 1)],                  # around 1, dense
    "log1p": [(0, INF_BITS + 1, STRIDE), (NEG, _bits(-1.0) + 1, STRIDE),
              (_bits(-0.5), _bits(-0.25), 1), (_bits(0.25), _bits(0.5), 1)],
}


def _max_error(built, fn, lo, hi, step, chunk=1 << 22):
    worst, worst_x = 0.0, None
    for start in range(lo, hi, chunk * step):
        stop = min(start + chunk * step, hi)
        x = np.arange(start, stop, step, dtype=np.uint64).astype(np.uint32).view(np.float32)
        y = _call(built, "v_" + fn, x)
        with np.errstate(all="ignore"):
            ref = REF[fn](x.astype(np.float64))
        err = ulp_error(y, ref)
        i = int(np.argmax(err))
        if err[i] > worst:
            worst, worst_x = float(err[i]), float(x[i])
    return worst, worst_x


@pytest.mark.parametrize("fn", FUNCS)
def test_max_ulp_error(built, fn):
    for lo, hi, step in SWEEPS[fn]:
        worst, at = _max_error(built, fn, lo, hi, step)
        assert worst <= MAX_ULP[fn], \
            f"{fn}: {worst:.3f} ulp at x={at!r} (bits {lo:#x}..{hi:#x} step {step})"


# ---------------------------------------------------------------- special values

INF, NAN = np.inf, np.nan
TINY = 2.0 ** -149                      # smallest subnormal
SPECIAL = {
    "exp": [(NAN, NAN), (-NAN, NAN), (INF, INF), (-INF, 0.0), (0.0, 1.0), (-0.0, 1.0),
            (88.72, 3.3931806e38), (88.7229, INF), (89.0, INF), (100.0, INF), (1e30, INF),
            (-103.97, TINY), (-104.0, 0.0), (-110.0, 0.0), (-1e30, 0.0),
            (TINY, 1.0), (-TINY, 1.0)],
    "tanh": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0),
             (TINY, TINY), (-TINY, -TINY), (1e-40, 1e-40), (-1e-30, -1e-30),
             (10.0, 1.0), (-20.0, -1.0), (1e30, 1.0), (-3e38, -1.0)],
    "sigmoid": [(NAN, NAN), (INF, 1.0), (-INF, 0.0), (0.0, 0.5), (-0.0, 0.5),
                (TINY, 0.5), (100.0, 1.0), (3e38, 1.0), (-104.0, 0.0), (-3e38, 0.0)],
    "log": [(NAN, NAN), (INF, INF), (-INF, NAN), (0.0, -INF), (-0.0, -INF), (-1.0, NAN),
            (-TINY, NAN), (1.0, 0.0), (TINY, -103.27893), (np.finfo(np.float32).max, 88.72284)],
    "log1p": [(NAN, NAN), (INF, INF), (-INF, NAN), (0.0, 0.0), (-0.0, -0.0), (-1.0, -INF),
              (-1.0000001, NAN), (-2.0, NAN), (TINY, TINY), (-TINY, -TINY), (1e-30, 1e-30),
              (-1e-30, -1e-30), (1.0, np.log(2.0)), (np.finfo(np.float32).max, 88.72284)],
}


@pytest.mark.parametrize("fn", FUNCS)
def test_special_values(built, fn):
    xs = np.array([x for x, _ in SPECIAL[fn]], dtype=np.float32)
    want = np.array([w for _, w in SPECIAL[fn]], dtype=np.float32)
    got = _call(built, "v_" + fn, xs)
    for x, w, g in zip(xs, want, got):
        if np.isnan(w):
            assert np.isnan(g), f"{fn}({x!r}) = {g!r}, want NaN"
        else:
            assert g == w and np.signbit(g) == np.signbit(w), f"{fn}({x!r}) = {g!r}, want {w!r}"


def test_sigmoid_far_negative_is_small_positive(built):
    x = np.array([-80.0, -90.0, -100.0, -103.0], dtype=np.float32)
    y = _call(built, "v_sigmoid", x)
    assert np.all(y > 0) and np.all(np.isfinite(y))
    assert np.all(ulp_error(y, _sigmoid64(x.astype(np.float64))) <= 1.0)


def test_subnormal_exp_is_gradual(built):
    """exp produces correctly rounded-ish subnormals (gradual underflow, no flush)."""
    x = np.linspace(-103.9, -87.4, 100001, dtype=np.float32)
    y = _call(built, "v_exp", x)
    ref = np.exp(x.astype(np.float64))
    assert np.all(y > 0)
    assert np.max(ulp_error(y, ref)) <= 1.0
    assert np.all(np.diff(y) >= 0)                        # monotone through the underflow


def test_tanh_is_odd_and_bounded(built):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(1 << 16) * 4).astype(np.float32)
    y, ym = _call(built, "v_tanh", x), _call(built, "v_tanh", -x)
    assert np.array_equal(y.view(np.uint32), (-ym).view(np.uint32))
    assert np.all(np.abs(y) <= 1.0)


def test_mixed_expressions(built):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(4099) * 5).astype(np.float32)
    g = rng.uniform(0.05, 0.95, 4099).astype(np.float32)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    t = np.tanh(x64)
    s = _sigmoid64(x64)
    # float32 sigmoid saturates (p == 1 for x > ~17, so log1p(-p) = -inf): the binary
    # cross-entropy reference uses the float32 probabilities the kernel itself sees.
    p = _call(built, "v_sigmoid", x).astype(np.float64)
    with np.errstate(divide="ignore"):
        bce = -(g64 * np.log(p) + (1 - g64) * np.log1p(-p))
    expected = {
        "m_tanh_grad": g64 * (1 - t * t),
        "m_silu_grad": g64 * s * (1 + x64 * (1 - s)),
        "m_softplus": np.maximum(x64, 0) + np.log1p(np.exp(-np.abs(x64))),
        "m_bce": bce,
        "m_shift_exp": np.exp(x64 - g64[0]) * g64,
    }
    for name, want in expected.items():
        got = _call(built, name, x, g)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- how it compiles

def test_loops_are_vectorised(built):
    """Each wrapper loop must be reported by GCC's -fopt-info-vec-optimized."""
    version = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    if "Free Software Foundation" not in version:
        pytest.skip("not GCC: -fopt-info-vec-optimized format unknown")
    vectorised = {int(m.group(1)) for m in
                  re.finditer(r":(\d+):\d+: (?:optimized|note): loop vectorized", built["opt_info"])}
    missed = [name for name, line in built["lines"].items() if line not in vectorised]
    assert not missed, f"loops not vectorised: {missed}\n{built['opt_info']}"


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
@pytest.mark.parametrize("march", ["x86-64-v2", "x86-64-v3"])
def test_loops_are_vectorised_on_older_x86(built, march):
    """Generated modules use -march=native, so the library must not rely on AVX-512 masking
    (GCC can vectorise some conditional code only with it): check SSE4.2 and AVX2 too."""
    version = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    if "Free Software Foundation" not in version:
        pytest.skip("not GCC: -fopt-info-vec-optimized format unknown")
    src = built["so"].with_suffix(".c")
    flags = [f if f != "-march=native" else f"-march={march}" for f in CFLAGS]
    proc = subprocess.run(["gcc", *flags, "-fopt-info-vec-optimized", "-S", str(src), "-o", "/dev/null"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"gcc cannot target {march}: {proc.stderr.strip()[:200]}")
    vectorised = {int(m.group(1)) for m in
                  re.finditer(r":(\d+):\d+: (?:optimized|note): loop vectorized", proc.stderr)}
    missed = [name for name, line in built["lines"].items() if line not in vectorised]
    assert not missed, f"{march}: loops not vectorised: {missed}"


def test_no_libm_calls(built):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not available")
    out = subprocess.run([nm, "-D", "--undefined-only", str(built["so"])],
                         capture_output=True, text=True).stdout
    undefined = set(re.findall(r"\bU\s+(\w+)", out))
    libm = {"expf", "tanhf", "logf", "log1pf", "fmaf", "exp", "tanh", "log", "log1p", "fma",
            "fabsf", "expm1f", "powf", "exp2f"}
    assert not (undefined & libm), undefined & libm


def test_no_jinja_delimiters_and_include_is_verbatim():
    text = _vmath_text()
    for delim in ("{{", "{%", "{#", "}}", "%}", "#}"):
        assert delim not in text, f"{delim!r} in vmath.c.j2"
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    rendered = env.from_string('{% include "kernels/vmath.c.j2" %}').render()
    assert rendered == text
