"""Tests for mnistnn/images.py: the MNIST steps (crop, fit in 20x20, centre by mass), image files.

The MNIST test digits must go through :func:`to_mnist` unchanged: they were made that way.  The
image files are written by each test; the ones for issue 21 (very wide, tall and huge images)
check what reading them costs as well as what comes out.
"""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistnn import datasets
from mnistnn.images import (
    MAX_PIXELS,
    BlankImageWarning,
    ImageFileError,
    centre_by_mass,
    crop_to_ink,
    fit_in_box,
    load_image,
    to_mnist,
)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 100 MNIST test digits, uint8 (100, 28, 28) (``make test`` fetches the data)."""
    return datasets.load_mnist("test")[0][:100]


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    mass = image.sum(dtype=np.float64)
    return float((rows * image).sum() / mass), float((cols * image).sum() / mass)


def upscaled(digit: np.ndarray, factor: int) -> np.ndarray:
    """``digit`` drawn ``factor`` times larger, as a pen on a large canvas would draw it."""
    return np.kron(digit, np.ones((factor, factor), dtype=np.uint8))


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


# --------------------------------------------------------------------------- the MNIST steps


def test_crop_to_ink_keeps_the_smallest_rectangle() -> None:
    ink = np.zeros((10, 12))
    ink[2, 3] = 1.0
    ink[6, 9] = 0.5
    crop = crop_to_ink(ink)
    assert crop.shape == (5, 7) and crop[0, 0] == 1.0 and crop[-1, -1] == 0.5
    assert crop_to_ink(np.zeros((4, 4))).shape == (0, 0)


@pytest.mark.parametrize(
    ("ink", "message"),
    [(np.zeros((2, 3, 3)), "shape"), (-np.ones((3, 3)), "negative")],
)
def test_crop_to_ink_refuses_what_is_not_ink(ink: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crop_to_ink(ink)


@pytest.mark.parametrize(
    ("shape", "fitted"),
    [((100, 50), (20, 10)), ((50, 100), (10, 20)), ((1, 200), (1, 20)), ((7, 7), (20, 20))],
)
def test_fit_in_box_keeps_the_aspect_ratio(shape: tuple[int, int], fitted: tuple[int, int]) -> None:
    box = fit_in_box(np.full(shape, 255, dtype=np.uint8))
    assert box.shape == fitted and box.dtype == np.float32
    assert box.min() >= 0 and box.max() <= 255


def test_fit_in_box_leaves_a_fitting_crop_alone() -> None:
    crop = np.random.default_rng(0).integers(0, 256, size=(20, 13)).astype(np.uint8)
    np.testing.assert_array_equal(fit_in_box(crop), crop)


def test_centre_by_mass_puts_the_mass_at_the_centre() -> None:
    box = np.zeros((20, 9))
    box[:, 0] = 255  # most of the mass on the left edge
    box[19, :] = 255
    field = centre_by_mass(box)
    assert field.shape == (28, 28) and field.dtype == np.uint8
    assert field.sum() == box.sum()  # moved by whole pixels, nothing cut
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_centre_by_mass_never_cuts_the_box() -> None:
    box = np.zeros((20, 20))
    box[0, 0] = 255  # the centre of mass in a corner: the box goes as far as it can
    field = centre_by_mass(box)
    assert field[8, 8] == 255 and field.sum() == 255  # the box at the bottom right, 8 + 20 = 28
    with pytest.raises(ValueError, match="does not fit"):
        centre_by_mass(np.ones((29, 3)))


def test_to_mnist_leaves_mnist_digits_as_they_are() -> None:
    X = datasets.load_mnist("test")[0]
    unchanged = sum(np.array_equal(to_mnist(x), x) for x in X)
    assert unchanged >= 9990, f"only {unchanged} of 10,000 MNIST test digits are unchanged"


def test_to_mnist_ignores_where_and_how_large_a_digit_is_drawn(digits: np.ndarray) -> None:
    for digit in digits[:20]:
        expected = to_mnist(digit)
        for factor, top, left in [(10, 0, 0), (9, 25, 20), (7, 80, 30), (4, 150, 150)]:
            canvas = np.zeros((280, 280), dtype=np.uint8)
            big = upscaled(digit, factor)
            canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
            pixels = to_mnist(canvas)
            assert pixels.dtype == np.uint8 and pixels.shape == (28, 28)
            # resampled, so not bit for bit: the same digit to within a few gray levels
            assert np.abs(pixels.astype(int) - expected).mean() < 12
            assert np.corrcoef(pixels.ravel(), expected.ravel())[0, 1] > 0.95


def test_to_mnist_of_nothing_is_blank() -> None:
    assert not to_mnist(np.zeros((280, 280))).any()


# --------------------------------------------------------------------------- image files


def test_load_image_keeps_mnist_pixels(tmp_path: Path, digits: np.ndarray) -> None:
    pixels, inverted = load_image(save(digits[0], tmp_path / "digit.png"))
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28)
    np.testing.assert_array_equal(pixels, digits[0])
    assert not inverted


def test_load_image_normalises_other_encodings(tmp_path: Path, digits: np.ndarray) -> None:
    digit = digits[0]
    dark_on_light = 255 - digit
    save(dark_on_light, tmp_path / "inverted.png")
    save(dark_on_light.astype(np.uint16) * 257, tmp_path / "16bit.png")
    save(np.stack([dark_on_light, dark_on_light, 255 - digit // 2], axis=-1), tmp_path / "rgb.png")
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = digit  # black ink on a transparent sheet
    save(rgba, tmp_path / "transparent.png")
    for name in ("inverted.png", "16bit.png", "transparent.png"):
        pixels, inverted = load_image(tmp_path / name)
        np.testing.assert_array_equal(pixels, digit, err_msg=name)
        assert inverted, name
    pixels, inverted = load_image(tmp_path / "rgb.png")
    assert inverted and np.abs(pixels.astype(int) - digit).max() <= 60  # blue ink is lighter


def test_load_image_removes_a_gray_background(tmp_path: Path, digits: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(-12, 13, size=(280, 280))
    paper = np.clip(200 + noise, 0, 255)  # gray paper with texture, a dark pen
    photo = np.clip(paper - upscaled(digits[0], 10).astype(int) * 150 // 255, 0, 255)
    pixels, inverted = load_image(save(photo.astype(np.uint8), tmp_path / "photo.png"))
    assert inverted
    assert np.corrcoef(pixels.ravel(), digits[0].ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("shape", "where", "peak_mb"),
    [((20_000, 28), (10_000, 0), 20), ((28, 3_000_000), (0, 1_500_000), 400)],
    ids=["28x20000", "3000000x28"],
)
def test_load_image_finds_a_digit_in_a_very_long_image(
    tmp_path: Path,
    digits: np.ndarray,
    shape: tuple[int, int],
    where: tuple[int, int],
    peak_mb: int,
) -> None:
    # issue 21, item 2: padding these to a square asked for 3.2 GB and for 32.7 TiB
    image = np.zeros(shape, dtype=np.uint8)
    image[where[0] : where[0] + 28, where[1] : where[1] + 28] = digits[0]
    path = tmp_path / "long.png"
    Image.fromarray(image).save(path, compress_level=1)
    del image
    tracemalloc.start()
    try:
        pixels, inverted = load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pixels, digits[0])
    assert not inverted
    assert peak < peak_mb * 2**20, f"reading the image took {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("side", "fragment"),
    [(12_000, "12000x12000 pixels (144,000,000)"), (14_000, "over 178,956,970 pixels")],
)
def test_load_image_refuses_huge_images_in_one_line(
    tmp_path: Path, side: int, fragment: str
) -> None:
    # issue 21, item 13: a 12k x 12k image printed Pillow's warning in several lines, and the
    # decompression-bomb error did not name the image
    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageFileError) as error:
            load_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: the image is {fragment}") and "\n" not in message
    assert f"{MAX_PIXELS:,} pixels" in message and "scale it down" in message


def test_load_image_names_a_damaged_file(tmp_path: Path, digits: np.ndarray) -> None:
    whole = save(upscaled(digits[0], 4), tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.png").write_text("not an image at all\n")
    with pytest.raises(ImageFileError, match=r"cut\.png: cannot read the image"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageFileError, match=r"text\.png: not an image file"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ImageFileError, match=r"10x10 pixels; it must be at least 28x28"):
        load_image(save(digits[0][9:19, 9:19], tmp_path / "small.png"))


# --------------------------------------------------------------------------- issue 31 #3


def blank_pictures(folder: Path) -> dict[str, Path]:
    """Image files with nothing in them, each a way a user may hand one over by mistake."""
    from PIL import ImageDraw

    paths = {}
    for name, level in (("white", 255), ("black", 0), ("grey", 128)):
        paths[name] = save(np.full((64, 64), level, np.uint8), folder / f"{name}.png")
    noisy = 200 + np.random.default_rng(0).integers(-3, 4, size=(64, 64))  # JPEG-like grain
    paths["grain"] = save(noisy.astype(np.uint8), folder / "grain.png")
    first, second = Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 255)
    ImageDraw.Draw(second).line([(32, 10), (32, 54)], fill=0, width=6)
    paths["gif, blank first frame"] = folder / "frames.gif"
    first.save(paths["gif, blank first frame"], save_all=True, append_images=[second])
    sheet = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(sheet).line([(32, 10), (32, 54)], fill=(255, 255, 255, 255), width=6)
    paths["white on transparent"] = folder / "white-on-transparent.png"
    sheet.save(paths["white on transparent"])
    return paths


def test_a_blank_picture_warns_and_gives_a_blank_digit(tmp_path: Path) -> None:
    """They used to become a digit without a word (the CLI then printed '1  14.88%')."""
    for name, path in blank_pictures(tmp_path).items():
        with pytest.warns(BlankImageWarning, match="blank") as caught:
            pixels, _ = load_image(path)
        assert not pixels.any(), name
        (warning,) = caught
        assert str(path) in str(warning.message)
        assert ("transparent" in str(warning.message)) == (name == "white on transparent")


def test_a_faint_but_real_digit_is_not_blank(tmp_path: Path, digits: np.ndarray) -> None:
    faint = (255 - digits[0] // 16).astype(np.uint8)  # 16 levels of ink on white
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlankImageWarning)
        pixels, inverted = load_image(save(faint, tmp_path / "faint.png"))
    assert inverted and pixels.any()


@pytest.mark.parametrize(
    ("value", "phrase"),
    [(np.inf, "NaN or infinite"), (np.nan, "NaN or infinite"), (1000.0, "from 0 to 1000")],
    ids=["inf", "nan", "above-255"],
)
def test_float_pixels_that_are_not_levels_are_refused(
    tmp_path: Path, value: float, phrase: str
) -> None:
    """An infinite pixel used to be divided by 257 into a confident wrong answer."""
    picture = np.zeros((64, 64), np.float32)
    picture[10:54, 28:36] = 255.0
    picture[0, 0] = value
    path = tmp_path / "float.tif"
    Image.fromarray(picture).save(path)
    with pytest.raises(ImageFileError, match=phrase) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    picture[0, 0] = 0.0
    Image.fromarray(picture).save(path)
    assert load_image(path)[0].any()


def test_non_finite_ink_is_refused() -> None:
    ink = np.zeros((28, 28))
    ink[5, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        to_mnist(ink)


@pytest.mark.posix
def test_an_image_path_that_is_a_fifo_does_not_block(tmp_path: Path, deadline) -> None:  # type: ignore[no-untyped-def]
    import os

    os.mkfifo(tmp_path / "fifo")
    deadline(5)
    with pytest.raises(OSError, match="FIFO"):
        load_image(tmp_path / "fifo")
