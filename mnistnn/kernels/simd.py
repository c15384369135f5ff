"""Explicit fused multiply-adds and a 16-lane float vector for the Numba kernels.

``fma(a, b, c)`` is ``a * b + c`` rounded once (LLVM's ``fma``, which a CPU without FMA
instructions computes in software).  The kernels fuse multiply-adds only where they call it and
give LLVM no fastmath flags, so every compiled copy of a kernel, for any CPU, rounds the same way
(LLVM left to itself fused differently in a freshly compiled kernel and in its cached copy, and
with ``reassoc`` it summed dot products in a vector width chosen for the CPU at hand).

Numba vectorizes a loop only when LLVM can prove it safe, and it cannot in the sparse first
layer: the pixel index comes from memory, so the reads of ``W`` and the writes of the sums might
overlap, and it falls back to one float at a time.  ``Vec16`` says it explicitly: a value of 16
floats (``float32`` or ``float64``) that a kernel keeps in a local variable, in vector registers,
from one loop iteration to the next.  LLVM splits it into as many registers as the machine needs
(one 512-bit register for ``float32`` where the CPU has AVX-512).  A layer of at most 16 units
keeps all its units in one ``Vec16``, a wide one 64 of them in four:

    vzeros(a)           16 zeros of the dtype of array ``a``
    vload(a, i, j)      ``a[i, j:j+16]`` of a C-ordered 2-D array (no bounds check)
    vstore(a, i, j, v)  ``a[i, j:j+16] = v`` (no bounds check)
    vfma(s, x, acc)     ``s * x + acc``, one fused multiply-add per lane (``s`` a scalar)
    vadd(u, v)          ``u + v``
    vsplat(s)           16 copies of the scalar ``s``

and, lane by lane, for the steps of one image through a narrow network:

    vmul(s, x)          ``s * x`` (``s`` a scalar; rounded on its own, never fused with an add)
    vrelu(v)            ``max(v, 0)`` as Python's ``max`` has it (``-0.0`` and NaN stay)
    vgate(c, v)         ``v`` where ``c > 0``, else 0 (the ReLU's derivative applied to ``v``)
    vsubat(v, k, s)     ``v`` with ``s`` subtracted from lane ``k``
    vlane(v, k)         lane ``k`` (``0 <= k < 16``)
    vany(v)             whether any lane is nonzero

and for a row of ``n <= 16`` values (a softmax over ten classes):

    vloadn(a, i, j, n, f)   ``a[i, j:j+n]``, lanes ``n..15`` set to ``f`` (nothing else is read)
    vstoren(a, i, j, n, v)  ``a[i, j:j+n] = v[:n]`` (nothing else is written)
    vmax(v), vsum(v)    the largest lane (NaN lanes ignored) and the sum of the lanes, in a fixed
                        pairwise order (lanes 0..7 + 8..15, then halves again)
    vfind(v, s)         the first lane equal to ``s`` (16 if none)
    vexp(v)             ``exp`` of every lane (see :func:`vexp`)

and for one float (the cross-entropy's logarithm):

    log(x)              the natural logarithm (see :func:`log`)

and to list nonzero pixels (:func:`mnistnn.kernels.pixels.sparse_pixels`):

    compress_nonzero(X, i, k, indices, values, q)   the nonzero ones of ``X[i, k:k+16]``, one after
                        another from ``values[q]`` (their columns from ``indices[q]``); returns
                        how many there were

The kernels keep every ``vload``/``vstore`` inside arrays whose rows are at least 16 wide, and
``vloadn``/``vstoren``'s ``n`` at most the row's width.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .plan import LANES

_I32 = ir.IntType(32)


class Vec16(types.Type):
    """Numba type of 16 floats of ``dtype`` (``types.float32`` or ``types.float64``)."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        super().__init__(name=f"Vec16({dtype})")


@register_model(Vec16)
class _Vec16Model(models.PrimitiveModel):
    """Stored as LLVM's ``<16 x float>`` / ``<16 x double>``."""

    def __init__(self, dmm, fe_type: Vec16) -> None:
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, LANES))


def _float_matrix(a) -> bool:
    """A C-ordered 2-D float array (its rows are contiguous)."""
    return (
        isinstance(a, types.Array)
        and a.ndim == 2
        and a.layout == "C"
        and isinstance(a.dtype, types.Float)
    )


def _lanes_pointer(context, builder, signature, args):
    """Pointer to ``a[i, j]`` cast to a pointer to 16 lanes (``args = (a, i, j, ...)``)."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    i = context.cast(builder, args[1], signature.args[1], types.intp)
    j = context.cast(builder, args[2], signature.args[2], types.intp)
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i, j])
    vec = ir.VectorType(context.get_value_type(aryty.dtype), LANES)
    return builder.bitcast(ptr, vec.as_pointer())


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``fma``), for three floats of one type.

    Explicit, so every compiled copy of a kernel, for any CPU, fuses the same operations.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fnty = ir.FunctionType(t, [t, t, t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vzeros(typingctx, a):
    """16 zeros of the dtype of array ``a``."""
    if not isinstance(a, types.Array) or not isinstance(a.dtype, types.Float):
        return None
    vt = Vec16(a.dtype)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(a), codegen


@intrinsic
def vload(typingctx, a, i, j):
    """``a[i, j:j+16]`` of a 2-D float array with contiguous rows."""
    if not (_float_matrix(a) and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None
    vt = Vec16(a.dtype)

    def codegen(context, builder, signature, args):
        ptr = _lanes_pointer(context, builder, signature, args)
        return builder.load(ptr, align=a.dtype.bitwidth // 8)

    return vt(a, i, j), codegen


@intrinsic
def vstore(typingctx, a, i, j, v):
    """``a[i, j:j+16] = v`` for a 2-D float array with contiguous rows."""
    if not (_float_matrix(a) and isinstance(v, Vec16) and v.dtype == a.dtype):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ptr = _lanes_pointer(context, builder, signature, args)
        builder.store(args[3], ptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, j, v), codegen


@intrinsic
def vfma(typingctx, s, x, acc):
    """``s * x + acc`` lane by lane as fused multiply-adds (``llvm.fma``); ``s`` a scalar of
    the vectors' dtype, the same in every lane."""
    if not (isinstance(x, Vec16) and x == acc and s == x.dtype):
        return None

    def codegen(context, builder, signature, args):
        vty = args[1].type
        name = f"llvm.fma.v{LANES}f{s.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        return builder.call(fn, [_splat(builder, args[0]), args[1], args[2]])

    return acc(s, x, acc), codegen


def _lanewise(emit):
    """An intrinsic ``f(u, v)`` of two :class:`Vec16` of one dtype, lane by lane: ``emit(builder,
    u, v)`` makes its LLVM IR."""

    def typer(typingctx, u, v):
        if not (isinstance(u, Vec16) and u == v):
            return None

        def codegen(context, builder, signature, args):
            return emit(builder, *args)

        return u(u, v), codegen

    typer.__doc__ = emit.__doc__
    return intrinsic(typer)


@_lanewise
def vadd(builder, u, v):
    """``u + v`` lane by lane."""
    return builder.fadd(u, v)


@_lanewise
def vsub(builder, u, v):
    """``u - v`` lane by lane."""
    return builder.fsub(u, v)


@_lanewise
def vtimes(builder, u, v):
    """``u * v`` lane by lane."""
    return builder.fmul(u, v)


@_lanewise
def vdiv(builder, u, v):
    """``u / v`` lane by lane."""
    return builder.fdiv(u, v)


@_lanewise
def vmaxnum(builder, u, v):
    """The larger of ``u`` and ``v`` lane by lane (``maxnum``: a NaN is ignored unless both are)."""
    fnty = ir.FunctionType(u.type, [u.type, u.type])
    name = f"llvm.maxnum.v{LANES}f{64 if isinstance(u.type.element, ir.DoubleType) else 32}"
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [u, v])


@intrinsic
def vwhere(typingctx, a, b, x, y):
    """``x`` in the lanes where ``a == b``, ``y`` in the others (four :class:`Vec16` of one
    dtype)."""
    if not (isinstance(a, Vec16) and a == b == x == y):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(builder.fcmp_ordered("==", args[0], args[1]), args[2], args[3])

    return x(a, b, x, y), codegen


@intrinsic
def vsplat(typingctx, s):
    """16 copies of the float ``s``."""
    if not isinstance(s, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return _splat(builder, args[0])

    return Vec16(s)(s), codegen


@intrinsic
def vmul(typingctx, s, x):
    """``s * x`` lane by lane (``s`` a scalar of the vector's dtype); a plain multiply, which LLVM
    may not fuse with a later add (the kernels give it no fastmath flags)."""
    if not (isinstance(x, Vec16) and s == x.dtype):
        return None

    def codegen(context, builder, signature, args):
        return builder.fmul(_splat(builder, args[0]), args[1])

    return x(s, x), codegen


@intrinsic
def vrelu(typingctx, v):
    """``max(v, 0)`` lane by lane, exactly as Numba compiles Python's ``max(x, 0.0)``: ``x`` unless
    ``0 > x`` (so ``-0.0`` and NaN stay as they are)."""
    if not isinstance(v, Vec16):
        return None

    def codegen(context, builder, signature, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", zero, args[0]), zero, args[0])

    return v(v), codegen


@intrinsic
def vgate(typingctx, c, v):
    """``v`` in the lanes where ``c > 0``, 0 in the others: ``v * ReLU'(c)`` without multiplying."""
    if not (isinstance(v, Vec16) and c == v):
        return None

    def codegen(context, builder, signature, args):
        zero = ir.Constant(args[1].type, None)
        return builder.select(builder.fcmp_ordered(">", args[0], zero), args[1], zero)

    return v(c, v), codegen


@intrinsic
def vsubat(typingctx, v, k, s):
    """``v`` with the scalar ``s`` subtracted from lane ``k`` (no other lane changes; no lane if
    ``k`` is not in 0..15)."""
    if not (isinstance(v, Vec16) and isinstance(k, types.Integer) and s == v.dtype):
        return None

    def codegen(context, builder, signature, args):
        less = builder.fsub(args[0], _splat(builder, args[2]))
        return builder.select(_lanes_compared(builder, "==", args[1]), less, args[0])

    return v(v, k, s), codegen


@intrinsic
def vlane(typingctx, v, k):
    """Lane ``k`` of ``v`` (``0 <= k < 16``, not checked)."""
    if not (isinstance(v, Vec16) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return v.dtype(v, k), codegen


@intrinsic
def vany(typingctx, v):
    """Whether any lane of ``v`` is nonzero (NaN counts as nonzero, as ``x != 0`` has it)."""
    if not isinstance(v, Vec16):
        return None

    def codegen(context, builder, signature, args):
        nonzero = builder.fcmp_unordered("!=", args[0], ir.Constant(args[0].type, None))
        bits = builder.bitcast(nonzero, ir.IntType(LANES))
        return builder.icmp_unsigned("!=", bits, ir.Constant(bits.type, 0))

    return types.boolean(v), codegen


def _splat(builder, value):
    """LLVM vector of 16 copies of the scalar ``value``."""
    vty = ir.VectorType(value.type, LANES)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), mask)


def _lanes_compared(builder, op, n):
    """``<16 x i1>``: lane ``k`` set where ``k op n`` (``op`` ``"=="`` or ``"<"``, ``n`` an LLVM
    integer): lane ``n`` only, or the first ``n`` lanes."""
    lanes = ir.Constant(ir.VectorType(n.type, LANES), list(range(LANES)))
    return builder.icmp_signed(op, lanes, _splat(builder, n))


def _masked_args(context, builder, signature, args):
    """``(pointer to a[i, j] as 16 lanes, mask of lanes < n)`` for ``args = (a, i, j, n, ...)``."""
    n = context.cast(builder, args[3], signature.args[3], types.intp)
    ptr = _lanes_pointer(context, builder, signature, args)
    return ptr, _lanes_compared(builder, "<", n)


def _row_args_ok(a, i, j, n) -> bool:
    indices = (i, j, n)
    return _float_matrix(a) and all(isinstance(x, types.Integer) for x in indices)


@intrinsic
def vloadn(typingctx, a, i, j, n, fill):
    """``a[i, j:j+n]`` of a 2-D float array with contiguous rows, lanes ``n..15`` set to ``fill``;
    reads nothing else (a masked load)."""
    if not (_row_args_ok(a, i, j, n) and fill == a.dtype):
        return None
    vt = Vec16(a.dtype)

    def codegen(context, builder, signature, args):
        ptr, mask = _masked_args(context, builder, signature, args)
        vty = ptr.type.pointee
        fnty = ir.FunctionType(vty, [ptr.type, _I32, mask.type, vty])
        name = f"llvm.masked.load.v{LANES}f{a.dtype.bitwidth}.p0"
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        align = ir.Constant(_I32, a.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, mask, _splat(builder, args[4])])

    return vt(a, i, j, n, fill), codegen


@intrinsic
def vstoren(typingctx, a, i, j, n, v):
    """``a[i, j:j+n] = v[:n]`` for a 2-D float array with contiguous rows; writes nothing else (a
    masked store)."""
    if not (_row_args_ok(a, i, j, n) and isinstance(v, Vec16) and v.dtype == a.dtype):
        return None

    def codegen(context, builder, signature, args):
        ptr, mask = _masked_args(context, builder, signature, args)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type.pointee, ptr.type, _I32, mask.type])
        name = f"llvm.masked.store.v{LANES}f{a.dtype.bitwidth}.p0"
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [args[4], ptr, ir.Constant(_I32, a.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()

    return types.none(a, i, j, n, v), codegen


def _halves(builder, v, combine):
    """Reduce the lanes of ``v`` to one: ``combine`` lanes ``0..h-1`` with ``h..2h-1`` for
    ``h = 8, 4, 2, 1`` (a fixed order, so every compiled copy rounds the same way)."""
    width = LANES
    while width > 1:
        width //= 2
        lo = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(_I32, width), list(range(width)))
        )
        hi = builder.shuffle_vector(
            v, v, ir.Constant(ir.VectorType(_I32, width), list(range(width, 2 * width)))
        )
        v = combine(lo, hi)
    return builder.extract_element(v, ir.Constant(_I32, 0))


@intrinsic
def vsum(typingctx, v):
    """The sum of the 16 lanes of ``v``, added pairwise in a fixed order."""
    if not isinstance(v, Vec16):
        return None

    def codegen(context, builder, signature, args):
        return _halves(builder, args[0], builder.fadd)

    return v.dtype(v), codegen


@intrinsic
def vmax(typingctx, v):
    """The largest of the 16 lanes of ``v`` (``maxnum``: a NaN lane is ignored unless all are)."""
    if not isinstance(v, Vec16):
        return None

    def codegen(context, builder, signature, args):
        def maxnum(x, y):
            fnty = ir.FunctionType(x.type, [x.type, x.type])
            name = f"llvm.maxnum.v{x.type.count}f{v.dtype.bitwidth}"
            return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [x, y])

        return _halves(builder, args[0], maxnum)

    return v.dtype(v), codegen


@intrinsic
def vfind(typingctx, v, s):
    """The index (``intp``) of the first lane of ``v`` equal to the scalar ``s``; 16 if none is."""
    if not (isinstance(v, Vec16) and s == v.dtype):
        return None

    def codegen(context, builder, signature, args):
        equal = builder.fcmp_ordered("==", args[0], _splat(builder, args[1]))
        bits = builder.bitcast(equal, ir.IntType(LANES))
        fnty = ir.FunctionType(bits.type, [bits.type, ir.IntType(1)])
        cttz = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.cttz.i{LANES}")
        first = builder.call(cttz, [bits, ir.Constant(ir.IntType(1), 0)])
        return builder.zext(first, context.get_value_type(types.intp))

    return types.intp(v, s), codegen


# exp(x) = 2**n * exp(r), n = round(x / ln 2), |r| <= ln(2) / 2; exp(r) by its Taylor series up to
# r**7 (float32) or r**13 (float64): the first term left out is below half a unit in the last
# place.  Below "lo" (where exp(x) leaves the normal range) the result is 0: computing a subnormal
# costs a microcode assist of ~150 cycles per lane on Intel CPUs, and a softmax's padding lanes
# (-inf) would pay it on every row.  Above "hi" 2**n, split in two normal factors, overflows to inf.
_EXP = {
    32: {"terms": 8, "lo": -87.33, "hi": 89.0, "int": ir.IntType(32), "mant": 23, "bias": 127},
    64: {"terms": 14, "lo": -708.39, "hi": 710.0, "int": ir.IntType(64), "mant": 52, "bias": 1023},
}


def _exp_codegen(builder, x, bits):
    """LLVM IR of ``exp`` of every lane of ``x`` (16 floats of ``bits`` bits)."""
    c = _EXP[bits]
    vty = x.type
    ity = ir.VectorType(c["int"], LANES)

    def const(value):
        return ir.Constant(vty, [value] * LANES)

    def call(name, fnty, fargs):
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), fargs)

    def fused(a, b, d):
        return call(f"llvm.fma.v{LANES}f{bits}", ir.FunctionType(vty, [vty] * 3), [a, b, d])

    tiny = builder.fcmp_ordered("<", x, const(c["lo"]))  # false for NaN
    x = builder.select(tiny, const(c["lo"]), x)
    x = builder.select(builder.fcmp_ordered(">", x, const(c["hi"])), const(c["hi"]), x)
    n = call(
        f"llvm.rint.v{LANES}f{bits}",
        ir.FunctionType(vty, [vty]),
        [builder.fmul(x, const(1 / math.log(2)))],
    )
    ln2_hi = float(np.float32(math.log(2))) if bits == 32 else math.log(2)
    ln2_lo = math.log(2) - ln2_hi if bits == 32 else 2.3190468138462996e-17
    r = fused(builder.fneg(n), const(ln2_hi), x)  # x - n ln2, in two steps
    r = fused(builder.fneg(n), const(ln2_lo), r)
    p = const(1 / math.factorial(c["terms"] - 1))
    for k in range(c["terms"] - 2, -1, -1):  # Horner: (((c7 r + c6) r + c5) r + ...) r + 1
        p = fused(p, r, const(1 / math.factorial(k)))
    # n is within the clamp's range, and NaN lanes become 0 here (they stay NaN through p)
    ni = builder.fptosi(builder.select(builder.fcmp_ordered("ord", n, n), n, const(0.0)), ity)
    half = builder.ashr(ni, ir.Constant(ity, [1] * LANES))
    for k in (half, builder.sub(ni, half)):  # 2**n as two factors, each a normal number
        exponent = builder.add(k, ir.Constant(ity, [c["bias"]] * LANES))
        scale = builder.bitcast(builder.shl(exponent, ir.Constant(ity, [c["mant"]] * LANES)), vty)
        p = builder.fmul(p, scale)
    return builder.select(tiny, const(0.0), p)


@intrinsic
def vexp(typingctx, v):
    """``exp`` of every lane, within about two units in the last place; NaN stays NaN, ``-inf``
    gives 0 and ``+inf`` gives ``inf``; results below the normal range are 0 (``exp(x)`` for
    ``x < -87.33`` in float32, ``x < -708.39`` in float64)."""
    if not isinstance(v, Vec16):
        return None

    def codegen(context, builder, signature, args):
        return _exp_codegen(builder, args[0], v.dtype.bitwidth)

    return v(v), codegen


# log(x) = k ln 2 + log(m), x = 2**k m with m in [sqrt(1/2), sqrt(2)) read off the bits (a
# subnormal x scaled by 2**"up" first); f = m - 1 (exact) and, with s = f / (2 + f),
# log(1 + f) = 2 atanh(s) = 2s + 2s**3/3 + 2s**5/5 + ... = f - (f**2/2 - s (f**2/2 + R)),
# R = 2z/3 + 2z**2/5 + ... (z = s**2) up to z**5 (float32) or z**10 (float64): |s| < 0.1716, so
# the first term left out is below a hundredth of a unit in the last place.  ln 2 comes in two
# parts, "hi" with few enough bits that k "hi" is exact, and the rest; the rounding errors of the
# large terms are carried to the end, which rounds once more.
_LN2 = Fraction("0.693147180559945309417232121458176568075500134360255254120680")


def _ln2_parts(hi_bits: int, dtype: type) -> tuple[float, float]:
    """``ln 2`` as ``hi + lo``: ``hi`` its first ``hi_bits`` bits, ``lo`` the rest in ``dtype``."""
    hi = Fraction(round(_LN2 * 2**hi_bits), 2**hi_bits)
    return float(hi), float(dtype(_LN2 - hi))


_LOG = {
    32: {"terms": 5, "int": ir.IntType(32), "mant": 23, "bias": 127, "up": 25,
         "ln2": _ln2_parts(12, np.float32), "dtype": np.float32},
    64: {"terms": 10, "int": ir.IntType(64), "mant": 52, "bias": 1023, "up": 54,
         "ln2": _ln2_parts(32, np.float64), "dtype": np.float64},
}  # fmt: skip


def _bits(value: float, c: dict) -> int:
    """The bits of ``value`` as the float type of ``c``."""
    return int(np.array(value, c["dtype"]).view(f"int{c['int'].width}"))


def _log_codegen(builder, x, bits):
    """LLVM IR of the natural logarithm of the float ``x`` (``bits`` bits)."""
    c = _LOG[bits]
    t, it = x.type, c["int"]

    def const(value):
        return ir.Constant(t, value)

    def fused(a, b, d):
        fnty = ir.FunctionType(t, [t] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.f{bits}")
        return builder.call(fn, [a, b, d])

    tiny = builder.fcmp_ordered("<", x, const(float(np.finfo(c["dtype"]).tiny)))
    scaled = builder.select(tiny, builder.fmul(x, const(2.0 ** c["up"])), x)
    sqrt_half = _bits(math.sqrt(0.5), c)
    ix = builder.add(builder.bitcast(scaled, it), ir.Constant(it, _bits(1.0, c) - sqrt_half))
    k = builder.sub(builder.ashr(ix, ir.Constant(it, c["mant"])), ir.Constant(it, c["bias"]))
    k = builder.sub(k, builder.select(tiny, ir.Constant(it, c["up"]), ir.Constant(it, 0)))
    mantissa = builder.and_(ix, ir.Constant(it, (1 << c["mant"]) - 1))
    m = builder.bitcast(builder.add(mantissa, ir.Constant(it, sqrt_half)), t)
    f = builder.fsub(m, const(1.0))
    s = builder.fdiv(f, builder.fadd(f, const(2.0)))
    z = builder.fmul(s, s)
    r = const(2 / (2 * c["terms"] + 1))
    for j in range(c["terms"] - 1, 0, -1):  # Horner: ((c4 z + c3) z + c2) z + c1, then times z
        r = fused(r, z, const(2 / (2 * j + 1)))
    r = builder.fmul(r, z)
    half_f = builder.fmul(const(0.5), f)
    hfsq = builder.fmul(half_f, f)
    hfsq_err = fused(half_f, f, builder.fneg(hfsq))  # f**2/2 = hfsq + hfsq_err exactly
    dk = builder.sitofp(k, t)
    ln2_hi, ln2_lo = c["ln2"]
    # the big terms k ln2_hi + f - hfsq added with their rounding errors kept (two Fast2Sums:
    # |f| >= hfsq, and |k ln2_hi| > |f - hfsq| unless k = 0), the errors added to the small terms
    a = builder.fsub(f, hfsq)
    a_err = builder.fsub(builder.fsub(f, a), hfsq)
    big = builder.fmul(dk, const(ln2_hi))
    total = builder.fadd(big, a)
    total_err = builder.fadd(builder.fsub(big, total), a)
    small = fused(s, builder.fadd(hfsq, r), builder.fmul(dk, const(ln2_lo)))
    small = builder.fadd(builder.fsub(small, hfsq_err), builder.fadd(a_err, total_err))
    out = builder.fadd(total, small)
    out = builder.select(builder.fcmp_ordered("==", x, const(math.inf)), const(math.inf), out)
    out = builder.select(builder.fcmp_ordered("==", x, const(0.0)), const(-math.inf), out)
    return builder.select(builder.fcmp_unordered("<", x, const(0.0)), const(math.nan), out)


@intrinsic
def log(typingctx, x):
    """The natural logarithm of the float ``x`` (``float32`` or ``float64``), within 0.7 units in
    the last place, from a fixed sequence of float operations (no C math library: the same bits
    on every machine).  ``log(0) = -inf``, ``log(inf) = inf``; negative numbers and NaN give NaN;
    subnormals are exact inputs."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return _log_codegen(builder, args[0], x.bitwidth)

    return x(x), codegen


def _flat(a, dtypes) -> bool:
    """A C-contiguous 1-D array of one of ``dtypes``."""
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype in dtypes


@intrinsic
def compress_nonzero(typingctx, X, i, k, indices, values, q):
    """Append the nonzero pixels of ``X[i, k:k+16]`` at ``values[q:]`` (``uint8`` converted to the
    dtype of ``values``; float pixels must have it) and their column numbers at ``indices[q:]``;
    returns how many (0..16).

    ``X`` a C-ordered 2-D array of ``uint8``, ``float32`` or ``float64``, ``k + 16 <= n_in``;
    ``indices`` 1-D ``uint16`` or ``int32``, ``values`` 1-D ``float32`` or ``float64``, with room
    for the pixels written (no bounds check).  One masked compress-store per array
    (``vcompressps`` with AVX-512): exactly as many elements are written as are nonzero.
    """
    pixel_types = (types.uint8, types.float32, types.float64)
    if not (isinstance(X, types.Array) and X.ndim == 2 and X.layout == "C"):
        return None
    if X.dtype not in pixel_types or not _flat(indices, (types.uint16, types.int32)):
        return None
    if not (_flat(values, (types.float32, types.float64)) and isinstance(q, types.Integer)):
        return None
    if X.dtype != types.uint8 and values.dtype != X.dtype:
        return None  # float pixels are copied as they are
    if not (isinstance(i, types.Integer) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        Xa, inda, vala = args[0], args[3], args[4]
        intp = lambda n: context.cast(builder, args[n], signature.args[n], types.intp)  # noqa: E731
        row, col, at = intp(1), intp(2), intp(5)
        xs = context.make_array(X)(context, builder, Xa)
        xptr = cgutils.get_item_pointer(context, builder, X, xs, [row, col])
        xty = ir.VectorType(context.get_value_type(X.dtype), LANES)
        x = builder.load(builder.bitcast(xptr, xty.as_pointer()), align=1)
        if X.dtype == types.uint8:
            nonzero = builder.icmp_unsigned("!=", x, ir.Constant(xty, [0] * LANES))
        else:
            nonzero = builder.fcmp_unordered("!=", x, ir.Constant(xty, [0.0] * LANES))
        vty = ir.VectorType(context.get_value_type(values.dtype), LANES)
        v = builder.uitofp(x, vty) if X.dtype == types.uint8 else x
        ity = ir.VectorType(context.get_value_type(indices.dtype), LANES)
        first = builder.trunc(col, ity.element)  # uint16 or int32 column numbers
        columns = builder.add(_splat(builder, first), ir.Constant(ity, list(range(LANES))))
        for arr_ty, arr, vec in ((values, vala, v), (indices, inda, columns)):
            a = context.make_array(arr_ty)(context, builder, arr)
            ptr = cgutils.get_item_pointer(context, builder, arr_ty, a, [at])
            fnty = ir.FunctionType(ir.VoidType(), [vec.type, ptr.type, nonzero.type])
            name = f"llvm.masked.compressstore.v{LANES}{'f' if arr_ty is values else 'i'}"
            name += str(arr_ty.dtype.bitwidth)
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            builder.call(fn, [vec, ptr, nonzero])
        bits = builder.bitcast(nonzero, ir.IntType(LANES))
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(bits.type, [bits.type]), f"llvm.ctpop.i{LANES}"
        )
        return builder.zext(builder.call(ctpop, [bits]), context.get_value_type(types.intp))

    return types.intp(X, i, k, indices, values, q), codegen
