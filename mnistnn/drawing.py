"""A digit you draw: a canvas, a "clear" button and the network's ten probabilities as bars.

Notebook 06 shows a :class:`DigitPad`.  Draw on its canvas with the mouse or a finger, and the
bars follow the network's probabilities while you draw.  The drawing is kept twice, with the
same pen: on the canvas in the browser (an ipycanvas widget), and as a grayscale picture in
Python (Pillow), white ink on black.  That picture becomes the network's input through
:func:`mnistnn.images.to_mnist`, exactly as ``mnistnn predict`` turns an image file into one.
Code can draw on the pad too (:meth:`DigitPad.draw`), which is how the notebook's examples and
the tests use it.  Needs the ``lab`` extra (ipycanvas, ipywidgets).
"""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, hold_canvas
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from .datasets import MNIST_CLASSES
from .images import MNIST_SIDE, BlankImageWarning, to_mnist
from .network import NNetworkExtended

__all__ = ["PAD_SIDE", "PEN_WIDTH", "DigitPad", "bar_chart_html", "predict_drawing"]

PAD_SIDE = 280
"""Side of the canvas in pixels: ten screen pixels for each pixel of a 28x28 digit."""
PEN_WIDTH = 20
"""Width of the pen in canvas pixels; a digit drawn to fill the canvas then has strokes about
as thick as MNIST's, after :func:`mnistnn.images.to_mnist`."""
UPDATE_INTERVAL = 0.05
"""Seconds between two updates of the bars while the pen moves (always one when it lifts)."""


def predict_drawing(model: NNetworkExtended, ink: ArrayLike) -> np.ndarray:
    """The network's class probabilities for a drawing: ``ink`` ``(height, width)``, 0 for
    the background, becomes an MNIST digit (:func:`~mnistnn.images.to_mnist`); ``(n_classes,)``.
    A drawing with no ink gives a :class:`~mnistnn.images.BlankImageWarning`: its answer is a
    guess.
    """
    pixels = to_mnist(ink)
    if not pixels.any():
        warnings.warn("the drawing is blank: there is no digit to classify", BlankImageWarning, 2)
    return model.predict_proba(pixels[None])[0]


def bar_chart_html(proba: ArrayLike | None, classes: Sequence[str]) -> str:
    """The probabilities as an HTML bar chart, one row per class, the most likely one
    highlighted; ``None`` (nothing drawn yet) gives empty bars and an invitation to draw."""
    if proba is None:
        proba, top, title = np.zeros(len(classes)), -1, "draw a digit on the canvas"
    else:
        proba = np.asarray(proba, dtype=np.float64)
        top = int(np.argmax(proba))
        title = f"most likely: {html.escape(classes[top])} ({proba[top]:.1%})"
    rows = []
    for k, (name, p) in enumerate(zip(classes, proba, strict=True)):
        color = "#2a7f3f" if k == top else "#8a8f98"
        rows.append(
            f'<tr class="mnistnn-bar" data-class="{html.escape(name)}" data-p="{p:.6f}">'
            f'<td style="width:1.5em;text-align:right">{html.escape(name)}</td>'
            f'<td style="width:180px"><div style="width:{100 * p:.1f}%;height:14px;'
            f'background:{color}"></div></td>'
            f'<td style="width:4em;text-align:right">{p:.1%}</td></tr>'
        )
    return (
        f'<div class="mnistnn-chart"><b class="mnistnn-verdict">{title}</b>'
        f'<table style="border-collapse:collapse">{"".join(rows)}</table></div>'
    )


class DigitPad:
    """A drawing pad for a trained network: a ``PAD_SIDE`` x ``PAD_SIDE`` canvas, a "clear"
    button, and the network's probabilities as a bar chart that follows the drawing.

    Show it as the last value of a notebook cell: its widgets are made then, so a pad that is
    only drawn on from code makes none.  ``ink`` is the drawing, uint8 ``(PAD_SIDE, PAD_SIDE)``;
    ``pixels`` what the network sees, uint8 ``(28, 28)``.  ``pen_width`` is 1 to ``PAD_SIDE``
    canvas pixels (a wider pen would only cost time: Pillow draws its whole round end).
    """

    def __init__(
        self,
        model: NNetworkExtended,
        classes: Sequence[str] = MNIST_CLASSES,
        pen_width: int = PEN_WIDTH,
    ) -> None:
        if model.nodes_in != MNIST_SIDE**2 or model.nodes_out != len(classes):
            raise ValueError(
                f"the pad needs a network with {MNIST_SIDE**2} inputs and {len(classes)} outputs, "
                f"got {model.nodes_in} and {model.nodes_out}"
            )
        if not (isinstance(pen_width, int | np.integer) and 1 <= pen_width <= PAD_SIDE):
            raise ValueError(
                f"pen_width must be a whole number from 1 to {PAD_SIDE}, got {pen_width!r}"
            )
        self.model = model
        self.classes = tuple(classes)
        self.pen_width = int(pen_width)
        self._picture = Image.new("L", (PAD_SIDE, PAD_SIDE))
        self._pen = ImageDraw.Draw(self._picture)
        self._pen_at: tuple[float, float] | None = None
        self._shown_at = 0.0
        self._widget: widgets.HBox | None = None
        self.canvas: Canvas | None = None
        self.chart: widgets.HTML | None = None

    # ------------------------------------------------------------------ what the network sees
    @property
    def ink(self) -> np.ndarray:
        """The drawing, uint8 ``(PAD_SIDE, PAD_SIDE)``: 255 where the pen went, 0 elsewhere."""
        return np.asarray(self._picture).copy()

    @property
    def pixels(self) -> np.ndarray:
        """The drawing as an MNIST digit, uint8 ``(28, 28)``."""
        return to_mnist(self._picture)

    @property
    def probabilities(self) -> np.ndarray | None:
        """The network's probabilities for the drawing, ``(n_classes,)``; None when blank."""
        if self._picture.getbbox() is None:
            return None
        return predict_drawing(self.model, self._picture)

    # ------------------------------------------------------------------ drawing
    def pen_down(self, x: float, y: float) -> None:
        """Put the pen on the canvas at ``(x, y)`` (canvas pixels): a dot."""
        self._pen_at = (x, y)
        self._stroke((x, y), (x, y))
        self._show(now=False)

    def pen_move(self, x: float, y: float) -> None:
        """Move the pen to ``(x, y)``: a line from where it was, when it is down."""
        if self._pen_at is None:
            return
        start, self._pen_at = self._pen_at, (x, y)
        self._stroke(start, (x, y))
        self._show(now=False)

    def pen_up(self, x: float | None = None, y: float | None = None) -> None:
        """Lift the pen, and bring the bars up to date."""
        if self._pen_at is not None:
            self._pen_at = None
            self._show(now=True)

    def draw(self, points: Sequence[tuple[float, float]]) -> None:
        """One stroke of the pen through ``points``, as a hand would draw it."""
        self.pen_down(*points[0])
        for point in points[1:]:
            self.pen_move(*point)
        self.pen_up()

    def clear(self) -> None:
        """Wipe the canvas and the drawing."""
        self._pen_at = None
        self._picture.paste(0, (0, 0, PAD_SIDE, PAD_SIDE))
        self._repaint()
        self._show(now=True)

    # ------------------------------------------------------------------ the widgets
    @property
    def widget(self) -> widgets.HBox:
        """The canvas and the "clear" button beside the bar chart (made on first use)."""
        if self._widget is None:
            self.canvas = Canvas(width=PAD_SIDE, height=PAD_SIDE)
            self.canvas.add_class("mnistnn-canvas")
            self.chart = widgets.HTML(layout=widgets.Layout(margin="0 0 0 24px"))
            clear = widgets.Button(description="clear", icon="eraser", tooltip="start again")
            clear.add_class("mnistnn-clear")
            clear.on_click(lambda _: self.clear())
            self._widget = widgets.HBox(
                [widgets.VBox([self.canvas, clear]), self.chart],
                layout=widgets.Layout(align_items="flex-start"),
            )
            self.canvas.on_mouse_down(self.pen_down)
            self.canvas.on_mouse_move(self.pen_move)
            self.canvas.on_mouse_up(self.pen_up)
            self.canvas.on_mouse_out(self.pen_up)
            self.canvas.on_touch_start(lambda touches: self.pen_down(*touches[0]))
            self.canvas.on_touch_move(lambda touches: self.pen_move(*touches[0]))
            self.canvas.on_touch_end(lambda touches: self.pen_up())
            self.canvas.on_touch_cancel(lambda touches: self.pen_up())
            self.canvas.on_client_ready(self._repaint)
            self._repaint()
            self._show(now=True)
        return self._widget

    def _stroke(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """A line with round ends, in the picture and on the canvas."""
        r = self.pen_width / 2
        self._pen.line([start, end], fill=255, width=self.pen_width)
        for x, y in (start, end):
            self._pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
        if self.canvas is None:
            return
        with hold_canvas():
            if start == end:
                self.canvas.fill_circle(*start, r)
            else:
                self.canvas.stroke_line(*start, *end)

    def _repaint(self) -> None:
        """Paint the whole canvas from the picture (also for a browser that connects late)."""
        if self.canvas is None:
            return
        with hold_canvas():
            self.canvas.line_width = self.pen_width
            self.canvas.line_cap = "round"
            self.canvas.stroke_style = "white"
            self.canvas.fill_style = "black"
            self.canvas.fill_rect(0, 0, PAD_SIDE, PAD_SIDE)
            self.canvas.fill_style = "white"
            if self._picture.getbbox() is not None:
                self.canvas.put_image_data(np.stack([np.asarray(self._picture)] * 3, axis=-1))

    def _show(self, now: bool) -> None:
        """Redraw the bars, at most every ``UPDATE_INTERVAL`` seconds unless ``now``."""
        if self.chart is None:
            return
        if not now and time.monotonic() - self._shown_at < UPDATE_INTERVAL:
            return
        self.chart.value = bar_chart_html(self.probabilities, self.classes)
        self._shown_at = time.monotonic()

    def _repr_mimebundle_(self, **kwargs: object) -> dict[str, object]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        sizes = " -> ".join(str(n) for n in self.model.layer_sizes)
        bundle["text/plain"] = (
            f"DigitPad: a {PAD_SIDE}x{PAD_SIDE} canvas to draw on, a 'clear' button and the "
            f"probabilities of the {sizes} network"
        )
        return bundle
