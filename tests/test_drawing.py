"""Tests for mnistnn/drawing.py: the drawing pad of notebook 06, without a browser.

The canvas's events are sent the way ipycanvas's front end sends them (the same messages), to a
network trained once for the module on the real MNIST files: a vertical stroke must read as a 1
and a closed loop as a 0, as in the browser test of ``make test-lab``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistnn import MNIST_CLASSES, NNetworkExtended, datasets
from mnistnn.drawing import PAD_SIDE, PEN_WIDTH, DigitPad, bar_chart_html, predict_drawing
from mnistnn.images import load_image, to_mnist

STROKE = [(140.0, 40.0), (140.0, 240.0)]


def loop(n: int = 48) -> list[tuple[float, float]]:
    """A closed oval, 140 x 190 canvas pixels, drawn clockwise from the top."""
    t = np.linspace(0.0, 2.0 * np.pi, n + 1)
    return list(zip(140 + 70 * np.sin(t), 140 - 95 * np.cos(t), strict=True))


@pytest.fixture(scope="module")
def net() -> NNetworkExtended:
    """Notebook 06's network: 784 -> 128 -> 10, three epochs (``make test`` fetches the data)."""
    X, y = datasets.load_mnist("train")
    model = NNetworkExtended(
        hidden_layers=(128,), batch_size=128, epochs=3, alpha=0.1, momentum=0.9, init="he",
        seed=0, progress=False,
    )  # fmt: skip
    return model.fit(X, y)


def send(pad: DigitPad, event: str, x: float, y: float) -> None:
    """A canvas event as ipycanvas's front end sends it to the kernel."""
    assert pad.canvas is not None
    content = {"event": event, "x": x, "y": y}
    if event.startswith("touch"):
        content = {"event": event, "touches": [{"x": x, "y": y}] if event != "touch_end" else []}
    pad.canvas._handle_frontend_event(pad.canvas, content, [])


def stroke_events(pad: DigitPad, points: list[tuple[float, float]], kind: str = "mouse") -> None:
    down, move, up = ("mouse_down", "mouse_move", "mouse_up")
    if kind == "touch":
        down, move, up = ("touch_start", "touch_move", "touch_end")
    send(pad, down, *points[0])
    for point in points[1:]:
        send(pad, move, *point)
    send(pad, up, *points[-1])


def chart_verdict(pad: DigitPad) -> str:
    assert pad.chart is not None
    match = re.search(r'class="mnistnn-verdict">([^<]*)<', pad.chart.value)
    assert match, pad.chart.value
    return match.group(1)


# --------------------------------------------------------------------------- functions


def test_bar_chart_html_has_a_bar_per_class() -> None:
    proba = np.array([0.05, 0.7, 0.25])
    chart = bar_chart_html(proba, ["a", "b", "c"])
    rows = re.findall(r'data-class="(\w)" data-p="([\d.]+)"', chart)
    assert [(name, float(p)) for name, p in rows] == [("a", 0.05), ("b", 0.7), ("c", 0.25)]
    assert "most likely: b (70.0%)" in chart
    assert "width:70.0%" in chart and "width:25.0%" in chart
    blank = bar_chart_html(None, ["a", "b", "c"])
    assert "draw a digit" in blank and blank.count("width:0.0%") == 3


def test_bar_chart_html_escapes_class_names() -> None:
    chart = bar_chart_html(np.array([0.4, 0.6]), ["T-shirt/top", "<b>&"])
    assert "<b>&" not in chart and "&lt;b&gt;&amp;" in chart


def test_predict_drawing_goes_through_to_mnist(net: NNetworkExtended) -> None:
    ink = np.zeros((PAD_SIDE, PAD_SIDE), dtype=np.uint8)
    ink[40:240, 130:150] = 255
    expected = net.predict_proba(to_mnist(ink)[None])[0]
    np.testing.assert_array_equal(predict_drawing(net, ink), expected)


# --------------------------------------------------------------------------- the pad


def test_pad_draws_with_a_round_pen(net: NNetworkExtended) -> None:
    pad = DigitPad(net)
    assert pad.probabilities is None and not pad.ink.any() and not pad.pixels.any()
    pad.draw(STROKE)
    rows, cols = np.nonzero(pad.ink)
    half = PEN_WIDTH // 2
    assert (rows.min(), rows.max()) == (40 - half, 240 + half)
    assert (cols.min(), cols.max()) == (140 - half, 140 + half)
    assert pad.canvas is None  # drawn on from code only: no widgets made


@pytest.mark.parametrize(("points", "digit"), [(STROKE, 1), (loop(), 0)], ids=["stroke", "loop"])
@pytest.mark.parametrize("kind", ["mouse", "touch"])
def test_pad_reads_a_stroke_as_1_and_a_loop_as_0(
    net: NNetworkExtended, points: list[tuple[float, float]], digit: int, kind: str
) -> None:
    pad = DigitPad(net)
    assert pad.widget.children  # made as displaying the pad makes them
    assert chart_verdict(pad) == "draw a digit on the canvas"
    stroke_events(pad, points, kind)
    p = pad.probabilities
    assert p is not None and p.argmax() == digit and p.max() > 0.9, p
    assert chart_verdict(pad) == f"most likely: {digit} ({p.max():.1%})"
    pad.clear()
    assert pad.probabilities is None and chart_verdict(pad) == "draw a digit on the canvas"


def test_pad_ignores_the_mouse_until_a_button_is_pressed(net: NNetworkExtended) -> None:
    pad = DigitPad(net)
    assert pad.widget.children
    send(pad, "mouse_move", 100, 100)
    send(pad, "mouse_move", 150, 150)
    assert not pad.ink.any()
    send(pad, "mouse_down", 100, 100)
    send(pad, "mouse_out", 100, 100)  # leaving the canvas lifts the pen
    send(pad, "mouse_move", 200, 200)
    assert not pad.ink[150:].any() and pad.ink[100, 100] == 255


def test_pad_and_predict_see_a_drawing_the_same_way(net: NNetworkExtended, tmp_path: Path) -> None:
    pad = DigitPad(net)
    pad.draw(loop())
    Image.fromarray(pad.ink).save(tmp_path / "loop.png")
    Image.fromarray(255 - pad.ink).save(tmp_path / "loop_on_paper.png")
    for name in ("loop.png", "loop_on_paper.png"):
        pixels, _ = load_image(tmp_path / name)
        np.testing.assert_array_equal(pixels, pad.pixels, err_msg=name)


def test_pad_shows_a_stable_text_in_place_of_the_widget(net: NNetworkExtended) -> None:
    pad = DigitPad(net)
    bundle = pad._repr_mimebundle_()
    assert bundle["text/plain"] == (
        "DigitPad: a 280x280 canvas to draw on, a 'clear' button and the probabilities of the "
        "784 -> 128 -> 10 network"
    )
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_pad_needs_a_digit_network() -> None:
    fashion_like = NNetworkExtended(nodes_in=784, hidden_layers=(4,), nodes_out=3, seed=0)
    with pytest.raises(ValueError, match="784 inputs and 10 outputs"):
        DigitPad(fashion_like, MNIST_CLASSES)


# --------------------------------------------------------------------------- issue 31


def test_pen_widths_the_pad_cannot_use_are_refused(net: NNetworkExtended, deadline) -> None:  # type: ignore[no-untyped-def]
    """A pen 10**9 pixels wide used to keep Pillow drawing its round end for minutes; a negative
    one failed deep inside Pillow at the first stroke."""
    deadline(5)
    refusal = f"pen_width must be a whole number from 1 to {PAD_SIDE}"
    for width in (10**9, PAD_SIDE + 1, 0, -5, 2.5):
        with pytest.raises(ValueError, match=refusal):
            DigitPad(net, pen_width=width)  # type: ignore[arg-type]
    DigitPad(net, pen_width=PAD_SIDE).draw(loop())


def test_a_blank_drawing_warns(net: NNetworkExtended) -> None:
    from mnistnn.images import BlankImageWarning

    with pytest.warns(BlankImageWarning, match="blank"):
        predict_drawing(net, np.zeros((PAD_SIDE, PAD_SIDE)))
