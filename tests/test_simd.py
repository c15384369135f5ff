"""Tests of the explicit arithmetic in :mod:`mnistnn.kernels.simd`, compiled in small Numba
functions.

They check the values (against NumPy in float64) and that wrong types are refused when Numba
compiles; not that the multiply-adds are fused, which a CPU without FMA may legally skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import mnistnn
from mnistnn.kernels.simd import (
    LANES,
    compress_nonzero,
    fma,
    log,
    vadd,
    vany,
    vexp,
    vfind,
    vfma,
    vgate,
    vlane,
    vload,
    vloadn,
    vmax,
    vmul,
    vrelu,
    vsplat,
    vstore,
    vstoren,
    vsubat,
    vsum,
    vzeros,
)

DTYPES = [np.float32, np.float64]


def assert_multiply_add(out, a, b, c):
    """``out == a * b + c`` up to rounding: within two units in the last place of the terms
    (a float64 reference rounds twice, so it is itself off by that much when the terms cancel)."""
    eps = np.finfo(out.dtype).eps
    ab = a.astype(np.float64) * b
    bound = 2 * eps * (np.abs(ab) + np.abs(c))
    assert np.all(np.abs(out - (ab + c)) <= bound)


@njit
def _fma_all(a, b, c, out):
    for i in range(out.shape[0]):
        out[i] = fma(a[i], b[i], c[i])


@njit
def _axpy_rows(s, X, Y, out):
    """``out[i, j:j+16] = s[i] * X[i, j:j+16] + Y[i, j:j+16]`` for j in 0 and 16, via Vec16."""
    for i in range(X.shape[0]):
        for j in range(0, X.shape[1], LANES):
            vstore(out, i, j, vfma(s[i], vload(X, i, j), vload(Y, i, j)))


@njit
def _sum_rows(X, out):
    """``out[0] = X[0] + X[1] + ...`` (rows of 16), a Vec16 carried through the loop."""
    acc = vzeros(X)
    for i in range(X.shape[0]):
        acc = vadd(acc, vload(X, i, 0))
    vstore(out, 0, 0, acc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_is_a_times_b_plus_c(dtype):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(1000).astype(dtype) for _ in range(3))
    out = np.empty(1000, dtype)
    _fma_all(a, b, c, out)
    assert_multiply_add(out, a, b, c)


def test_fma_refuses_mixed_or_integer_types():
    with pytest.raises(TypingError):
        njit(lambda a, b, c: fma(a, b, c))(np.float32(1), np.float64(2), np.float32(3))
    with pytest.raises(TypingError):
        njit(lambda a, b, c: fma(a, b, c))(1, 2, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_multiply_add_load_and_store(dtype):
    rng = np.random.default_rng(1)
    X, Y = (rng.standard_normal((5, 2 * LANES)).astype(dtype) for _ in range(2))
    s = rng.standard_normal(5).astype(dtype)
    out = np.full((5, 2 * LANES), np.nan, dtype)
    _axpy_rows(s, X, Y, out)
    assert_multiply_add(out, np.broadcast_to(s[:, None], X.shape), X, Y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_carried_through_a_loop(dtype):
    X = np.arange(3 * LANES, dtype=dtype).reshape(3, LANES)
    out = np.full((1, LANES + 1), -1, dtype)
    _sum_rows(X, out)
    np.testing.assert_array_equal(out[0, :LANES], X.sum(axis=0))
    assert out[0, LANES] == -1  # the lane after the vector is untouched


def test_vector_ops_refuse_wrong_types():
    X32 = np.zeros((2, LANES), np.float32)
    with pytest.raises(TypingError):  # a vector of float32 with a float64 scalar
        njit(lambda X: vfma(1.0, vload(X, 0, 0), vload(X, 1, 0)))(X32)
    with pytest.raises(TypingError):  # storing float32 lanes into a float64 array
        njit(lambda X, Y: vstore(Y, 0, 0, vload(X, 0, 0)))(X32, np.zeros((2, LANES)))
    with pytest.raises(TypingError):  # rows that are not contiguous
        njit(lambda X: vload(X, 0, 0))(np.zeros((LANES, 2), np.float32).T)
    with pytest.raises(TypingError):  # integers
        njit(lambda X: vzeros(X))(np.zeros((2, LANES), np.int64))


@njit
def _image_steps(s, X, C, k, out, lanes, any_nonzero):
    """Per row ``i`` of ``X``: ``out[0, i] = s * X[i]``, ``out[1, i] = max(X[i], 0)``,
    ``out[2, i] = X[i]`` where ``C[i] > 0`` else 0, ``out[3, i] = X[i]`` minus ``s`` in lane
    ``k[i]``; ``lanes[i]`` lane ``k[i] % 16`` of ``X[i]``, ``any_nonzero[i]`` whether ``X[i]`` has
    a nonzero lane."""
    for i in range(X.shape[0]):
        x = vload(X, i, 0)
        vstore(out[0], i, 0, vmul(s, x))
        vstore(out[1], i, 0, vrelu(x))
        vstore(out[2], i, 0, vgate(vload(C, i, 0), x))
        vstore(out[3], i, 0, vsubat(x, k[i], s))
        lanes[i] = vlane(x, k[i] % LANES)
        any_nonzero[i] = vany(x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lane_by_lane_steps_match_python_scalars(dtype):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, LANES)).astype(dtype)
    X[0, :4] = [-0.0, 0.0, np.nan, -np.inf]  # the edge cases of max(x, 0) and of x > 0
    X[1] = 0.0  # no nonzero lane
    X[2] = -0.0  # nor here
    X[3] = 0.0
    X[3, 5] = np.nan  # NaN counts as nonzero
    C = rng.standard_normal((6, LANES)).astype(dtype)
    C[0, :3] = [0.0, -0.0, np.nan]  # not > 0: gated to 0
    k = np.array([0, 15, 3, 5, -1, 16])  # -1 and 16: no lane changes
    s = dtype(0.3)
    out = np.full((4, 6, LANES), -7, dtype)
    lanes, any_nonzero = np.empty(6, dtype), np.empty(6, np.bool_)
    _image_steps(s, X, C, k, out, lanes, any_nonzero)
    relu = np.array([[max(float(v), 0.0) for v in row] for row in X], dtype)  # Python's max
    np.testing.assert_array_equal(out[0], s * X)  # NumPy's multiply rounds once, too
    np.testing.assert_array_equal(out[1], relu)
    np.testing.assert_array_equal(np.signbit(out[1]), np.signbit(relu))  # -0.0 stays -0.0
    np.testing.assert_array_equal(out[2], np.where(C > 0, X, 0))
    expected = X.copy()
    expected[[0, 1, 2, 3], [0, 15, 3, 5]] -= s
    np.testing.assert_array_equal(out[3], expected)
    np.testing.assert_array_equal(lanes, X[np.arange(6), k % LANES])
    np.testing.assert_array_equal(any_nonzero, [True, False, False, True, True, True])


def test_lane_by_lane_steps_refuse_wrong_types():
    X32 = np.zeros((2, LANES), np.float32)
    with pytest.raises(TypingError):  # a float64 scalar for float32 lanes
        njit(lambda X: vmul(1.0, vload(X, 0, 0)))(X32)
    with pytest.raises(TypingError):  # lanes of two dtypes
        njit(lambda X, Y: vgate(vload(X, 0, 0), vload(Y, 0, 0)))(X32, np.zeros((2, LANES)))
    with pytest.raises(TypingError):  # a float lane number
        njit(lambda X: vlane(vload(X, 0, 0), 1.0))(X32)
    with pytest.raises(TypingError):
        njit(lambda X: vsubat(vload(X, 0, 0), 1, 1.0))(X32)
    with pytest.raises(TypingError):  # not a vector
        njit(lambda: vrelu(1.0))()
    with pytest.raises(TypingError):
        njit(lambda: vany(1.0))()


@njit
def _exp_rows(X, out):
    for i in range(X.shape[0]):
        vstore(out, i, 0, vexp(vload(X, i, 0)))


@njit
def _row_stats(X, n, fill, out, stats):
    """Per row of ``X``: ``out[i, :n] = exp(X[i, :n] - max)`` (masked load and store) and
    ``stats[i] = (max, sum of exp, first lane of the max)``."""
    for i in range(X.shape[0]):
        z = vloadn(X, i, 0, n, fill)
        top = vmax(z)
        e = vexp(vadd(z, vsplat(-top)))
        stats[i, 0], stats[i, 1], stats[i, 2] = top, vsum(e), vfind(z, top)
        vstoren(out, i, 0, n, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vexp_within_two_ulp_of_exp_over_the_normal_range(dtype):
    info = np.finfo(dtype)
    lo, hi = np.log(info.tiny) + 0.01, np.log(info.max) - 0.01  # the normal results
    x = np.concatenate([np.linspace(lo, hi, 64 * LANES), np.linspace(-1, 1, 64 * LANES)])
    x = np.concatenate([x, dtype(np.finfo(dtype).eps) * np.arange(-LANES, LANES)]).astype(dtype)
    out = np.empty_like(x)
    _exp_rows(x.reshape(-1, LANES), out.reshape(-1, LANES))
    exact = np.exp(x.astype(np.longdouble))
    ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert np.max(np.abs(out - exact) / ulp) <= 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_vexp_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array(
        [-np.inf, np.inf, np.nan, 0, -0.0, 1, -1000, 1000, np.log(info.tiny) - 1, -np.nan]
        + [np.log(info.max) + 0.5, np.log(info.max) - 0.5, 2, 3, -2, -3],
        dtype,
    )
    out = np.empty_like(x)
    _exp_rows(x.reshape(1, LANES), out.reshape(1, LANES))
    with np.errstate(over="ignore"):
        expected = np.exp(x)
    expected[8] = 0  # below the normal range: 0, not a subnormal
    np.testing.assert_array_equal(
        out[[0, 1, 2, 3, 4, 6, 7, 8, 9, 10]], expected[[0, 1, 2, 3, 4, 6, 7, 8, 9, 10]]
    )
    np.testing.assert_allclose(out, expected, rtol=4 * info.eps)


@njit
def _log_all(x, out):
    for i in range(x.shape[0]):
        out[i] = log(x[i])


def ulp_errors(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``|out - ln(x)|`` in units in the last place of ``ln(x)`` rounded to ``x``'s dtype, with
    ``ln`` from Python's decimal module to 40 digits (exact enough on every platform, where
    ``np.longdouble`` may be no wider than float64)."""
    errors = np.empty(len(x))
    with localcontext() as ctx:
        ctx.prec = 40
        for i, (xi, oi) in enumerate(zip(x.tolist(), out.tolist(), strict=True)):
            exact = Decimal(xi).ln()
            ulp = Decimal(float(np.spacing(np.abs(x.dtype.type(exact)))))
            errors[i] = abs(Decimal(oi) - exact) / ulp
    return errors


def log_inputs(dtype: type, n: int = 6000) -> np.ndarray:
    """Positive finite floats of ``dtype``: random bit patterns over the whole range, subnormals,
    the sums a softmax takes the logarithm of (1 to 16, and 1 + a few units in the last place)."""
    rng = np.random.default_rng(7)
    info = np.finfo(dtype)
    ints = np.dtype(f"int{info.bits}")
    top = int(np.array(info.max, dtype).view(ints))
    x = rng.integers(1, top, n, dtype=ints).view(dtype)
    sub = rng.integers(1, int(np.array(info.tiny, dtype).view(ints)), n // 10, dtype=ints)
    near1 = 1 + info.eps * np.arange(1, 65)
    return np.concatenate(
        [x, sub.view(dtype), rng.uniform(1, 16, n), near1, 1 - info.epsneg * np.arange(1, 65)]
    ).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_within_0_7_ulp_over_the_whole_range(dtype):
    """Measured on 220,000 inputs of each dtype, most of them in [sqrt(1/2), sqrt(2)) where the
    error is largest: at most 0.63 ulp in float32 and in float64, 99.9% within half an ulp
    (NumPy's ``np.log`` on ``log_inputs(n=20000)``: 2.0 ulp in float32, 0.504 in float64)."""
    x = log_inputs(dtype)
    out = np.empty_like(x)
    _log_all(x, out)
    assert ulp_errors(x, out).max() <= 0.7


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, 1.0, np.inf, -1.0, -np.inf, np.nan, info.smallest_subnormal], dtype)
    out = np.empty_like(x)
    _log_all(x, out)
    np.testing.assert_array_equal(out[:4], [-np.inf, -np.inf, 0.0, np.inf])
    assert not np.signbit(out[2])  # log(1) is +0
    assert np.isnan(out[4:7]).all()
    assert ulp_errors(x[7:], out[7:]).max() <= 0.5  # ln of the smallest subnormal


def test_log_refuses_what_is_not_a_float():
    with pytest.raises(TypingError):
        njit(lambda: log(1))()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 10, LANES])
def test_row_of_n_values_masked_reductions(dtype, n):
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((50, n)) * 10).astype(dtype)
    X[0] = 3  # a tie: the first lane wins
    X[1, -1] = np.nan  # vmax ignores a NaN lane (also a lone one: then the fill is the max)
    out = np.empty((50, n), dtype)
    stats = np.empty((50, 3), dtype)
    _row_stats(X, n, dtype(-np.inf), out, stats)
    ok = np.arange(50) != 1
    np.testing.assert_array_equal(stats[ok, 0], X[ok].max(axis=1))
    np.testing.assert_array_equal(stats[ok, 2], X[ok].argmax(axis=1))
    assert stats[1, 0] == (np.nanmax(X[1]) if n > 1 else -np.inf) and np.isnan(stats[1, 1])
    shifted = (X[ok] - X[ok].max(axis=1, keepdims=True)).astype(np.float64)  # rounded as in dtype
    np.testing.assert_allclose(out[ok], np.exp(shifted), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(
        stats[ok, 1], np.exp(shifted).sum(axis=1), rtol=8 * np.finfo(dtype).eps
    )


def test_masked_row_ops_touch_only_n_lanes():
    X = np.arange(3 * LANES, dtype=np.float32).reshape(3, LANES)
    out = np.full((3, LANES), -1, np.float32)
    stats = np.empty((3, 3), np.float32)
    _row_stats(X, 5, np.float32(-np.inf), out, stats)
    assert np.all(out[:, 5:] == -1)
    np.testing.assert_array_equal(stats[:, 0], X[:, 4])  # lanes 5.. are not read: fill instead
    np.testing.assert_array_equal(stats[:, 2], [4, 4, 4])
    _row_stats(X, 5, np.float32(1e6), out, stats)  # the fill takes part in the reductions
    np.testing.assert_array_equal(stats[:, 0], [1e6, 1e6, 1e6])
    np.testing.assert_array_equal(stats[:, 2], [5, 5, 5])


def test_vfind_without_a_match_gives_16():
    find = njit(lambda X, s: vfind(vload(X, 0, 0), s))
    assert find(np.zeros((1, LANES), np.float32), np.float32(1)) == LANES
    assert find(np.full((1, LANES), np.nan), np.nan) == LANES


def test_row_ops_refuse_wrong_types():
    X32 = np.zeros((2, LANES), np.float32)
    with pytest.raises(TypingError):  # a float64 fill for float32 lanes
        njit(lambda X: vloadn(X, 0, 0, 3, 0.0))(X32)
    with pytest.raises(TypingError):  # a float32 vector stored into float64 rows
        njit(lambda X, Y: vstoren(Y, 0, 0, 3, vload(X, 0, 0)))(X32, np.zeros((2, LANES)))
    with pytest.raises(TypingError):
        njit(lambda: vsplat(1))()
    with pytest.raises(TypingError):
        njit(lambda X: vfind(vload(X, 0, 0), 1.0))(X32)


def test_compress_nonzero_refuses_wrong_types():
    X = np.zeros((2, LANES), np.uint8)
    fn = njit(lambda X, ind, val: compress_nonzero(X, 0, 0, ind, val, 0))
    with pytest.raises(TypingError):  # 8-byte column numbers
        fn(X, np.zeros(LANES, np.int64), np.zeros(LANES, np.float32))
    with pytest.raises(TypingError):  # integer values
        fn(X, np.zeros(LANES, np.uint16), np.zeros(LANES, np.int32))
    with pytest.raises(TypingError):  # pixels that are not C-ordered rows
        fn(X.T, np.zeros(LANES, np.uint16), np.zeros(LANES, np.float32))
    with pytest.raises(TypingError):  # float pixels into values of another precision
        fn(X.astype(np.float32), np.zeros(LANES, np.uint16), np.zeros(LANES, np.float64))


_CACHE_PROBE = """
import numpy as np
from mnistnn.kernels import pixels
pixels.sparse_pixels(np.eye(20, 40, dtype=np.uint8))
stats = pixels._sparse_pixels.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_editing_the_intrinsics_recompiles_the_cached_kernels(tmp_path):
    """A kernel cached by Numba is keyed to its own file (``pixels.py``); the intrinsics of
    ``simd.py`` compiled into it count too, so editing them alone must not load old machine
    code (``kernels/cache.py`` stamps every kernel with all the package's files)."""
    package = Path(mnistnn.__file__).parent
    shutil.copytree(package, tmp_path / "mnistnn", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def hits_and_misses() -> tuple[int, int]:
        run = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        hits, misses = run.stdout.split()
        return int(hits), int(misses)

    assert hits_and_misses() == (0, 1)  # an empty cache: compiled
    assert hits_and_misses() == (1, 0)  # nothing changed: loaded
    with open(tmp_path / "mnistnn" / "kernels" / "simd.py", "a") as simd:
        simd.write("\n# an edit of the intrinsics\n")
    assert hits_and_misses() == (0, 1)  # recompiled, though pixels.py is unchanged
    assert hits_and_misses() == (1, 0)
