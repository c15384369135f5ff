"""Explicit fused multiply-adds and a 16-lane float vector for the Numba kernels.

``fma(a, b, c)`` is ``a * b + c`` rounded once.  The kernels fuse multiply-adds only where they
call it, so every compiled copy of a kernel rounds the same way (LLVM left to itself fused
differently in a freshly compiled kernel and in its cached copy).

Numba vectorizes a loop only when LLVM can prove it safe, and it cannot in the sparse first
layer: the pixel index comes from memory, so the reads of ``W`` and the writes of the sums might
overlap, and it falls back to one float at a time.  ``Vec16`` says it explicitly: a value of 16
floats (``float32`` or ``float64``) that a kernel keeps in a local variable, in vector registers,
from one loop iteration to the next.  LLVM splits it into as many registers as the machine needs
(one 512-bit register for ``float32`` where the CPU has AVX-512).  A layer of at most 16 units
keeps all its units in one ``Vec16``:

    vzeros(a)           16 zeros of the dtype of array ``a``
    vload(a, i, j)      ``a[i, j:j+16]`` of a C-ordered 2-D array (no bounds check)
    vstore(a, i, j, v)  ``a[i, j:j+16] = v`` (no bounds check)
    vfma(s, x, acc)     ``s * x + acc``, one fused multiply-add per lane (``s`` a scalar)
    vadd(u, v)          ``u + v``

The kernels keep every ``vload``/``vstore`` inside arrays whose rows are at least 16 wide.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16


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
    i, j = (context.cast(builder, args[n], signature.args[n], types.intp) for n in (1, 2))
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i, j])
    vec = ir.VectorType(context.get_value_type(aryty.dtype), LANES)
    return builder.bitcast(ptr, vec.as_pointer())


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` as one fused multiply-add (LLVM's ``fmuladd``), for three floats of one type.

    Explicit, so every compiled copy of a kernel fuses the same operations; ``reassoc`` lets a
    chain of them be a vectorized dot product.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        fnty = ir.FunctionType(t, [t, t, t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.f{a.bitwidth}")
        return builder.call(fn, args, fastmath=("reassoc", "nsz"))

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
    """``s * x + acc`` lane by lane as fused multiply-adds (``llvm.fmuladd``); ``s`` a scalar of
    the vectors' dtype, the same in every lane."""
    if not (isinstance(x, Vec16) and x == acc and s == x.dtype):
        return None

    def codegen(context, builder, signature, args):
        vty = args[1].type
        lane0 = ir.Constant(ir.IntType(32), 0)
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), args[0], lane0)
        mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        splat = builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), mask)
        name = f"llvm.fmuladd.v{LANES}f{s.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        return builder.call(fn, [splat, args[1], args[2]])

    return acc(s, x, acc), codegen


@intrinsic
def vadd(typingctx, u, v):
    """``u + v`` lane by lane."""
    if not (isinstance(u, Vec16) and u == v):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return u(u, v), codegen
