"""Pictures as MNIST digits: a drawing or an image file turned into 28x28 pixels.

MNIST's digits were made from black-and-white scans: each digit was scaled to fit a 20x20 box,
keeping its aspect ratio (the anti-aliasing of that scaling made the gray levels), then placed
in a 28x28 field so that its centre of mass falls on the centre.  :func:`to_mnist` does the same
to any array of ink levels, in three steps that notebook 06 shows one by one:
:func:`crop_to_ink`, :func:`fit_in_box` and :func:`centre_by_mass`.  An MNIST digit goes
through them unchanged.  :func:`load_image` reads an image file (a photo, a scan, a PNG from a
paint program) as ink on black before doing the same.  The command line's ``predict`` and the
drawing pad of notebook 06 (:mod:`mnistnn.drawing`) both go through :func:`to_mnist`, so they
see a digit the same way.

A picture with nothing in it (one uniform level, or less than :data:`MIN_CONTRAST` levels
between the background and its strongest mark) becomes a blank digit, and :func:`load_image`
says so with a :class:`BlankImageWarning`: any class a network gives a blank page is a guess.
Pixels that are not levels (NaN, infinite, or out of range in a float or 32-bit image) are
refused with an :class:`ImageFileError`.
"""

from __future__ import annotations

import warnings
from os import PathLike
from typing import BinaryIO

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageOps, UnidentifiedImageError

from ._files import open_regular

__all__ = [
    "BOX_SIDE",
    "MAX_PIXELS",
    "MIN_CONTRAST",
    "MNIST_SIDE",
    "BlankImageWarning",
    "ImageFileError",
    "centre_by_mass",
    "crop_to_ink",
    "fit_in_box",
    "load_image",
    "to_mnist",
]

MNIST_SIDE = 28
"""Side of an MNIST image, in pixels."""
BOX_SIDE = 20
"""Side of the box an MNIST digit is scaled to fit, in pixels."""
MAX_PIXELS = 89_478_485
"""Largest image :func:`load_image` reads: Pillow's default decompression-bomb limit."""
PAPER_TEXTURE = 0.2
"""In an image file whose border is not uniform (a photo, a scan), levels that differ from the
background by less than three times the border's own spread (its 99th percentile), and at most
this share of the strongest ink, are paper texture or noise: they become 0."""
MIN_CONTRAST = 8
"""A picture whose strongest mark differs from its background by fewer levels (of 255) than
this is blank: what is there is compression noise or grain, not a digit to scale up."""
_WIDEST_INTEGER = 65535  # 16-bit images; their levels are divided by 257


class ImageFileError(ValueError):
    """An image file that cannot be used; the message names the file and says what to do."""


class BlankImageWarning(UserWarning):
    """An image with nothing in it: no digit to classify, so any prediction would be a guess."""


# --------------------------------------------------------------------------- the MNIST steps


def crop_to_ink(ink: ArrayLike) -> np.ndarray:
    """The smallest rectangle holding every nonzero pixel of ``ink`` ``(height, width)``: a view,
    ``(0, 0)`` when there is no ink.  Negative levels are not allowed."""
    ink = np.asarray(ink)
    if ink.ndim != 2:
        raise ValueError(f"expected ink levels of shape (height, width), got shape {ink.shape}")
    if ink.size and not np.isfinite(ink).all():
        raise ValueError("ink levels must be finite numbers; found NaN or infinity")
    if ink.size and ink.min() < 0:
        raise ValueError("ink levels must not be negative: 0 is the background")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return ink[:0, :0]
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_in_box(crop: ArrayLike, side: int = BOX_SIDE) -> np.ndarray:
    """``crop`` ``(h, w)`` scaled so that its longer side is ``side``, keeping the aspect ratio
    (Lanczos filter, levels clipped to 0..255): float32 ``(h', w')``, both at most ``side``.

    A crop whose longer side already is ``side`` is returned as it is (as float32)."""
    crop = np.ascontiguousarray(crop, dtype=np.float32)
    height, width = crop.shape
    if height == 0 or width == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if max(height, width) == side:
        return np.clip(crop, 0.0, 255.0)
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.clip(np.asarray(small), 0.0, 255.0)


def centre_by_mass(box: ArrayLike, side: int = MNIST_SIDE) -> np.ndarray:
    """``box`` ``(h, w)`` (both at most ``side``) placed in a ``side x side`` field so that its
    centre of mass falls on the pixel nearest the centre (index ``side // 2``, as in MNIST),
    moved by whole pixels and never cut: uint8 ``(side, side)``.  An empty box gives zeros."""
    box = np.clip(np.rint(np.asarray(box, dtype=np.float64)), 0, 255)
    height, width = box.shape
    if height > side or width > side:
        raise ValueError(f"a {width}x{height} box does not fit in {side}x{side}")
    field = np.zeros((side, side), dtype=np.uint8)
    mass = box.sum()
    if mass == 0:
        return field
    row = (box.sum(axis=1) @ np.arange(height)) / mass
    col = (box.sum(axis=0) @ np.arange(width)) / mass
    top = int(np.clip(np.floor(side // 2 - row + 0.5), 0, side - height))
    left = int(np.clip(np.floor(side // 2 - col + 0.5), 0, side - width))
    field[top : top + height, left : left + width] = box
    return field


def to_mnist(ink: ArrayLike) -> np.ndarray:
    """Ink levels ``(height, width)`` (0 is the background, up to 255 for full ink) as an MNIST
    digit, uint8 ``(28, 28)``: cropped to the ink, fitted into a 20x20 box keeping the aspect
    ratio, centred by its centre of mass.  No ink gives a blank image."""
    return centre_by_mass(fit_in_box(crop_to_ink(ink)))


# --------------------------------------------------------------------------- image files


def load_image(path: str | PathLike[str]) -> tuple[np.ndarray, bool]:
    """An image file as an MNIST digit: ``(uint8 (28, 28), inverted)``.

    Colour becomes luminance, transparency is laid on white and the EXIF orientation is
    applied.  When the border of the image is light on average, the image is inverted (MNIST's
    ink is light on black).  The border's median level becomes the background, 0, the strongest
    ink 255, and the paper's texture 0 (:data:`PAPER_TEXTURE`: none on a uniform border); then
    :func:`to_mnist` crops, scales and centres the digit, so a small digit in a large picture
    of any aspect ratio is found where it is.  The image must be at least 28x28 and at most
    :data:`MAX_PIXELS` pixels; every problem raises :class:`ImageFileError` naming the file.
    A blank picture (see :data:`MIN_CONTRAST`) gives a blank digit and a
    :class:`BlankImageWarning`.
    """
    gray, transparent = _read_gray(path)
    height, width = gray.shape
    if min(height, width) < MNIST_SIDE:
        raise ImageFileError(
            f"{path}: the image is {width}x{height} pixels; it must be at least "
            f"{MNIST_SIDE}x{MNIST_SIDE}"
        )
    ink, inverted = _ink(gray)
    if ink.size == 0:
        hint = (
            " (laid on white as a transparent image is: a light digit on a transparent "
            "background vanishes; save it on a dark background)"
            if transparent
            else ""
        )
        warnings.warn(
            f"{path}: the image is blank{hint}: there is no digit to classify",
            BlankImageWarning,
            stacklevel=2,
        )
    return to_mnist(ink), inverted


def _ink(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """The ink of a picture ``gray`` (uint8 ``(height, width)``), light on black and cropped
    to it: ``(float32 (h, w) in 0..255, inverted)``; ``(0, 0)`` for a blank picture."""
    height, width = gray.shape
    b = max(1, min(height, width) // MNIST_SIDE)  # one pixel of the 28x28 result, roughly
    border = np.concatenate(
        [gray[:b].ravel(), gray[-b:].ravel(), gray[:, :b].ravel(), gray[:, -b:].ravel()]
    )
    inverted = bool(border.mean() > 127.5)
    sign = -1.0 if inverted else 1.0  # ink is sign * (level - background)
    background = float(np.median(border))
    strongest = float(gray.min() if inverted else gray.max())
    contrast = sign * (strongest - background)
    if contrast < MIN_CONTRAST:  # a blank picture
        return np.zeros((0, 0), dtype=np.float32), inverted
    spread = max(0.0, float(np.percentile(sign * (border - background), 99)))
    texture = min(3.0 * spread, PAPER_TEXTURE * contrast)
    threshold = background + sign * texture
    crop = gray[_ink_rectangle(gray < threshold if inverted else gray > threshold)]
    ink = np.clip(sign * (crop.astype(np.float32) - background) * (255.0 / contrast), 0.0, 255.0)
    ink[ink <= texture * (255.0 / contrast)] = 0.0
    return ink, inverted


def _ink_rectangle(is_ink: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the smallest rectangle holding every True of ``is_ink`` (nonempty)."""
    rows, cols = np.flatnonzero(is_ink.any(axis=1)), np.flatnonzero(is_ink.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _read_gray(path: str | PathLike[str]) -> tuple[np.ndarray, bool]:
    """The gray levels of an image file, uint8 ``(height, width)``: one byte per pixel, however
    large the image (up to :data:`MAX_PIXELS`); and whether it was transparent."""
    with open_regular(path) as file, _open(file, path) as image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise _too_large(path, f"{width}x{height} pixels ({width * height:,})")
        try:
            ImageOps.exif_transpose(image, in_place=True)
            return _luminance(image, path)
        except ImageFileError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a damaged file
            raise ImageFileError(f"{path}: cannot read the image: {exc}") from None


def _open(file: BinaryIO, path: str | PathLike[str]) -> Image.Image:
    """``Image.open(file)``, with one-line errors naming the file ``path``."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (in several lines) above its limit; _read_gray says it in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(file)
    except Image.DecompressionBombError:  # Pillow's own refusal, above twice its limit
        raise _too_large(path, f"over {2 * MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageFileError(
            f"{path}: not an image file (or a format Pillow cannot read)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageFileError(f"{path}: cannot read the image: {exc}") from None


def _too_large(path: str | PathLike[str], size: str) -> ImageFileError:
    return ImageFileError(
        f"{path}: the image is {size}, more than the {MAX_PIXELS:,} pixels mnistnn reads; "
        "scale it down first"
    )


def _luminance(image: Image.Image, path: str | PathLike[str]) -> tuple[np.ndarray, bool]:
    """Gray levels of ``image``, uint8 ``(height, width)``, and whether it was transparent.

    16-bit levels are divided by 257; a float image must hold levels in 0..255, a 32-bit
    integer one levels in 0..65535 (anything else is not a picture's levels: refused)."""
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if transparent:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        gray = np.asarray(image)
        top, kind = (255, "float") if image.mode == "F" else (_WIDEST_INTEGER, "integer")
        if not np.isfinite(gray).all():
            raise ImageFileError(f"{path}: the image has NaN or infinite pixels; not levels")
        low, high = gray.min(), gray.max()
        if low < 0 or high > top:
            raise ImageFileError(
                f"{path}: the image's pixels run from {low:g} to {high:g}; an {kind} image "
                f"({image.mode}) needs levels in 0..{top}"
            )
        if high > 255:
            gray = gray / 257.0
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8), transparent
    return np.asarray(image if image.mode == "L" else image.convert("L")), transparent
