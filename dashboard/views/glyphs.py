"""Colours and the Bokeh glyphs the views refill in place: highlight rasters, the star, map mosaics."""
from __future__ import annotations

import numpy as np

from dashboard.views.base import change, image_columns

SELECTED = "#ff7f0e"  # selection highlight, everywhere
FLAGGED = "#d62728"  # flagged outliers
MASKED = "#b0b0b0"  # masked spaxels
#: Colours of the BPT classes (core.bpt.CLASSES order).
BPT_COLOURS = {"sf": "#1f77b4", "comp": "#2ca02c", "seyfert": "#d62728", "liner": "#ff7f0e",
               "ambiguous": "#9467bd", "invalid": "#d9d9d9"}
CATEGORY_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")


def category_colours(values) -> dict[str, str]:
    """A colour per category; BPT classes get their conventional colours."""
    values = [str(v) for v in values]
    if set(values) <= set(BPT_COLOURS):
        return {v: BPT_COLOURS[v] for v in values}
    return {v: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, v in enumerate(sorted(values))}


def raster_mask(x: np.ndarray, y: np.ndarray, x_range, y_range, shape: tuple[int, int], spread: int = 1) -> np.ndarray:
    """Which pixels of a (width, height) raster over the ranges hold a point, grown by ``spread`` px.

    Returns (height, width) uint8, row 0 at the bottom (Bokeh's image order). A plain
    index computation: at a million points it costs a few milliseconds.
    """
    w, h = shape
    fx = (x - x_range[0]) * (w / (x_range[1] - x_range[0]))
    fy = (y - y_range[0]) * (h / (y_range[1] - y_range[0]))
    with np.errstate(invalid="ignore"):
        ok = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    hit = np.zeros(h * w, dtype=bool)
    hit[fy[ok].astype(np.int64) * w + fx[ok].astype(np.int64)] = True
    hit = hit.reshape(h, w)  # (h * w,) -> (h, w)
    out = hit.copy()
    for dy in range(-spread, spread + 1):
        for dx in range(-spread, spread + 1):
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                hit[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out.astype(np.uint8)


class RasterLayer:
    """Some of a plot's galaxies drawn as a one-colour raster over a scatter plot.

    :meth:`add_to` adds an image glyph to the plot's Bokeh figure; :meth:`show_rows` and
    :meth:`zoom` refill its data source (a uint8 raster at the frame's resolution, so a
    million rows cost what a few do, in the browser too). ``x``/``y`` are the coordinates
    of every galaxy in the plot's space (NaN where it has none).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, frame_px: tuple[int, int], ranges, colour: str,
                 spread: int = 1):
        from bokeh.models import ColumnDataSource

        self.x, self.y, self.frame_px, self.ranges = x, y, frame_px, ranges
        self.colour, self.spread = colour, spread
        self.rows = np.zeros(0, dtype=np.int64)
        self.source = ColumnDataSource({"image": [np.zeros((1, 1), np.uint8)], "x": [0.0], "y": [0.0],
                                        "dw": [1.0], "dh": [1.0]})

    def add_to(self, fig) -> None:
        from bokeh.models import Image, LinearColorMapper

        # 0 (no galaxy of these rows in the pixel) is below ``low``, hence drawn transparent.
        mapper = LinearColorMapper(palette=[self.colour], low=1, high=1, low_color=(0, 0, 0, 0))
        fig.add_glyph(self.source, Image(color_mapper=mapper))

    def show_rows(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._draw()

    def zoom(self, x_range, y_range) -> None:
        self.ranges = (tuple(x_range), tuple(y_range))
        if len(self.rows):
            self._draw()

    def _draw(self) -> None:
        if len(self.rows):
            image = raster_mask(self.x[self.rows], self.y[self.rows], *self.ranges, self.frame_px, self.spread)
        else:
            image = np.zeros((1, 1), np.uint8)
        change(self.source, data=image_columns(image, self.ranges))


class Star:
    """The inspected galaxy as a star over a scatter plot (a glyph added by :meth:`add_to`)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        from bokeh.models import ColumnDataSource

        self.x, self.y = x, y
        self.source = ColumnDataSource({"x": [], "y": []})

    def add_to(self, fig) -> None:
        from bokeh.models import Scatter

        fig.add_glyph(self.source, Scatter(x="x", y="y", marker="star", size=20, fill_color="white", line_color="black",
                                           line_width=1.5))

    def show(self, row: int | None) -> None:
        ok = row is not None and np.isfinite(self.x[row]) and np.isfinite(self.y[row])
        change(self.source, data={"x": [float(self.x[row])] if ok else [], "y": [float(self.y[row])] if ok else []})


class Mosaic:
    """A grid of equal square maps, each a labelled panel, drawn by two glyphs of a plain Bokeh figure.

    Coordinates are spaxels. Panel ``i`` sits in row ``i // ncols`` (top first), column
    ``i % ncols``, with a label strip above it. One image glyph draws every panel (one image per panel, so
    the gaps are background and NaN spaxels, the masked ones, show in the mapper's NaN
    colour), one text glyph the labels.
    """

    def __init__(self, n: int, size: int, ncols: int, label_px: float = 14.0, px_per_spaxel: float = 2.0):
        self.n, self.s, self.ncols = n, size, max(1, min(ncols, n))
        self.nrows = -(-n // self.ncols)
        self.gap = max(1, size // 16)
        self.strip = max(2, int(np.ceil(label_px / px_per_spaxel)))
        self.width = self.ncols * (size + self.gap)
        self.height = self.nrows * (size + self.strip)

    def origin(self, i: int) -> tuple[int, int]:
        """(x, y counted down from the mosaic's top) of panel i's top-left spaxel."""
        r, c = divmod(i, self.ncols)
        return c * (self.s + self.gap), r * (self.s + self.strip) + self.strip

    def panel_at(self, x: float, y: float) -> int | None:
        """The panel under the point (x, y) of the mosaic's own coordinates, or None for a gap or strip."""
        c, col_off = divmod(x, self.s + self.gap)
        r, row_off = divmod(self.height - y, self.s + self.strip)
        i = int(r) * self.ncols + int(c)
        if 0 <= x < self.width and 0 <= y <= self.height and col_off < self.s and row_off >= self.strip \
                and i < self.n:
            return i
        return None

    def images(self, maps: np.ndarray) -> list[np.ndarray]:
        """(n, S, S) maps (row 0 the southern edge, as in the DAP files and Bokeh's images) as the
        image column; slots beyond ``len(maps)`` are blank."""
        blank = np.full((self.s, self.s), np.nan, np.float32)
        return [np.ascontiguousarray(maps[i], dtype=np.float32) if i < len(maps) else blank for i in range(self.n)]

    def image_columns(self, maps: np.ndarray, at: tuple[float, float] = (0.0, 0.0)) -> dict:
        """The columns of an image glyph drawing ``maps`` as the panels, the mosaic's bottom-left corner at
        the figure's point ``at``."""
        ax, ay = at
        corners = [self.origin(i) for i in range(self.n)]
        return {"image": self.images(maps), "x": [ax + x0 for x0, _ in corners],
                "y": [ay + self.height - y0 - self.s for _, y0 in corners],
                "dw": [self.s] * self.n, "dh": [self.s] * self.n}

    def label_columns(self, labels, at: tuple[float, float] = (0.0, 0.0)) -> dict:
        """The columns (x, y, text) of a text glyph writing ``labels`` in the strips above the panels."""
        ax, ay = at
        corners = [self.origin(i) for i in range(self.n)]
        return {"x": [ax + x0 + self.s / 2 for x0, _ in corners],
                "y": [ay + self.height - y0 + self.strip / 2 for _, y0 in corners],
                "text": list(labels) + [""] * (self.n - len(labels))}

    def draw(self, fig, maps: np.ndarray, mapper, labels, at: tuple[float, float] = (0.0, 0.0),
             label_size: str = "10px"):
        """Add the panels (coloured by ``mapper``) and their labels to ``fig``, the mosaic's bottom-left
        corner at the figure's point ``at``; returns the image
        renderer and the labels' data source, to refill later with :meth:`images` and new ``text``."""
        from bokeh.models import ColumnDataSource

        renderer = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image_columns(maps, at),
                             color_mapper=mapper)
        text = ColumnDataSource(self.label_columns(labels, at))
        fig.text("x", "y", "text", source=text, text_font_size=label_size, text_color="#333",
                 text_align="center", text_baseline="middle")
        return renderer, text


def plain_figure(width: float, height: float, px_per_unit: float, **params):
    """A Bokeh figure with no axes, grid, toolbar or zoom whose data coordinates span (0, width) x
    (0, height) at ``px_per_unit`` screen pixels each way, so a spaxel is drawn square."""
    from bokeh.models import Range1d
    from bokeh.plotting import figure

    fig = figure(x_range=Range1d(0, width), y_range=Range1d(0, height), frame_width=round(width * px_per_unit),
                 frame_height=round(height * px_per_unit), x_axis_location=None, y_axis_location=None,
                 toolbar_location=None, tools=[], min_border=0, outline_line_color=None, **params)
    fig.grid.visible = False
    return fig
