"""Why the inspected galaxy is odd: which score component and which lines, where on the galaxy, its line ratios.

One small Bokeh figure (issue 11: few figures paint fast) and a line of text:

- the text names the score that places the galaxy highest in the run (``anomaly_score`` and
  the catalogue's other ``score_<name>`` columns, e.g. ``score_consistency``, each placed in
  the run by its percentile), the lines with the largest shares of the autoencoder's error
  (``err_<line>``), those with the largest shares of ``score_consistency`` (the lines that
  disagree with the others, ``consistency_lines.npy``), the ion whose maps depart most from
  the galaxy's two-spectrum mix (``mixing_group``, ``core.mixing``) and the feature (a line ratio,
  an ion's offset, ellipticity or size) most out of step with the survey's (``census_feature``,
  ``core.census``); and, where ``score_sharp`` puts it in the run's flagged tail, the line and the
  place where its maps are sharper than the PSF allows (``sharp_line``, ``core.sharpness``);
- left, *where*: the normalised residual (``core.scoring.normalised_residual``: data minus
  model in units of the score's error) of the three lines that weigh most, the consistency
  detector's cell map (``core.consistency.cell_map``, cached by embed) as a square root: the RMS,
  over the lines, of each line's misfit in sigma when the network predicted it hidden, and the
  mixing detector's map of the ion and scale where the galaxy departs most from its two-spectrum
  mix (``core.mixing.departure``: the matched-filtered residual, signed, in sigma, labelled with the
  ion and the filter's sigma in cells; the mix is fitted again for the one galaxy), and where its maps
  exceed the bound that the PSF sets for any sky (``core.sharpness.cell_map``, in sigma; measured again
  on the galaxy's MAPS file, since the bound is a property of the native spaxels);
- right, the log [NII]/Hα, [OIII]/Hβ and [SII]/Hα maps (``core.bpt.ratio_maps``) of the data
  and of the reconstruction, with the data's S/N cut applied to both.
"""
from __future__ import annotations

import html

import numpy as np
import panel as pn

from core import bpt, census, mixing, scoring, sharpness
from dashboard.views.base import PANEL_CSS, StateView, change, section_title
from dashboard.views.glyphs import MASKED, Mosaic, plain_figure
from dashboard.views.inspector import symmetric_limit

#: The ratio maps drawn, in order, with their labels.
RATIO_MAPS = {"log_nii_ha": "[NII]/Hα", "log_oiii_hb": "[OIII]/Hβ", "log_sii_ha": "[SII]/Hα"}
#: Colour range of the log ratio maps (dex): the span of the BPT diagrams' axes.
RATIO_RANGE = (-1.5, 1.0)
#: How many lines the "where" maps show: the ones with the largest shares of the error.
TOP_LINES = 3
#: The label of the consistency detector's panel, after the lines' residuals.
CROSS_LINE = "cross-line"
#: The label (with the ion) of the mixing detector's panel, last.
MIX = "mix"
#: The label of the sharpness panel, last.
SHARP = "sharp"
#: Panels of the "where" mosaic: the lines' residuals, the cross-line map, the mix map, the sharpness map; and its
#: columns.
WHERE_PANELS, WHERE_COLUMNS = TOP_LINES + 3, 3
#: The labels of each mosaic's panels in :func:`explain`'s result.
LABELS = {"where": "where_labels", "ratios": "ratio_labels"}
#: Screen pixels: the ratio mosaic's width (three panels; the "where" mosaic's three columns are drawn on the same
#: scale), the title strip, the room for a colour bar.
MOSAIC_PX, TITLE_PX, COLOUR_BAR_PX = 300, 24, 64


def components(data, row: int) -> list[tuple[str, float, float]]:
    """``(column, value, percentile in the run)`` of the anomaly score and of every other detector's
    ``score_<name>`` column (``score_consistency``, ``core.consistency``), the most extreme first."""
    cat = data.catalogue
    cols = ["anomaly_score", *sorted(c for c in cat.columns if c.startswith("score_"))]
    out = []
    for col in cols:
        population = data.derived(("sorted", col), lambda c=col: np.sort(cat[c].to_numpy(np.float64)))
        value = float(cat[col].iat[row])
        out.append((col, value, float(scoring.percentile_in([value], population)[0])))
    return sorted(out, key=lambda c: -np.nan_to_num(c[2], nan=-1.0))


def explain(data, row: int) -> dict:
    """Everything the view draws for catalogue row ``row`` (pure: no Bokeh), see the module's docstring.

    ``components``, ``lines`` (``(line, share)``, largest first), ``where`` ``(k, S, S)`` and
    ``where_labels``, ``ratios`` ``(6, S, S)`` (data's three ratio maps, then the model's) and
    ``ratio_labels``.
    """
    run, lines = data.run, list(data.lines)
    ds = run.dataset
    mask = np.asarray(ds.mask[row], dtype=bool)
    flux = np.asarray(ds.flux[row])  # (L, S, S) read once from the memory-mapped dataset
    x = np.where(mask, np.nan, flux.astype(np.float64))
    recon = np.where(mask, np.nan, np.asarray(run.recon[row], dtype=np.float64))
    ivar = np.asarray(ds.ivar[row], dtype=np.float64)
    floor = scoring.ERROR_FLOOR * scoring.floor_peaks(x[None], mask[None], lines)[0]
    shares = [(ln, float(data.catalogue[f"err_{ln}"].iat[row])) for ln in lines if f"err_{ln}" in data.catalogue]
    shares.sort(key=lambda s: -np.nan_to_num(s[1], nan=-1.0))
    top = [ln for ln, _ in shares[:TOP_LINES]] or lines[:TOP_LINES]
    idx = [lines.index(ln) for ln in top]
    where = [scoring.normalised_residual(x[i], recon[i], ivar[i], floor) for i in idx]
    labels = list(top)  # the mosaic's title says these are residuals; a longer label overlaps its neighbour
    cells = run.consistency_map
    where.append(np.sqrt(np.asarray(cells[row], dtype=np.float64)) if cells is not None
                 else np.full(x.shape[1:], np.nan))
    labels.append(CROSS_LINE if cells is not None else "")
    calibration = mixing.calibration_of(run.manifest.score)
    if calibration is not None:  # ~10 ms: the galaxy's own mix fitted again, as embed fitted it
        resid = mixing.residuals(flux[None], ivar[None], mask[None], lines, rank=mixing.rank_of(calibration))[0]
        factors = mixing.catalogue_factors(data.catalogue.iloc[[row]])
        snr = mixing.signal_to_noise(flux[None], ivar[None], mask[None], lines)[0]
        group, sigma, departure = mixing.departure(resid, lines, calibration, None if factors is None else factors[0],
                                                   snr)
        where.append(departure)
        # short: the labels sit side by side
        labels.append(f"{MIX}: {'all' if group == mixing.ALL_LINES else group}, {sigma:g}")
    else:
        where.append(np.full(x.shape[1:], np.nan))
        labels.append("")
    sharp, label = sharp_where(data, row)
    where.append(sharp)
    labels.append(label)
    ratios = [bpt.ratio_maps(cube, lines, mask, ivar) for cube in (x, recon)]
    return {"components": components(data, row), "lines": shares, "where": np.array(where, dtype=np.float32),
            "where_labels": labels,
            "ratios": np.array([r[k] for r in ratios for k in RATIO_MAPS], dtype=np.float32),
            "ratio_labels": [f"{who} {name}" for who in ("data", "model") for name in RATIO_MAPS.values()]}


def sharp_where(data, row: int) -> tuple[np.ndarray, str]:
    """``(map (S, S), label)``: where the galaxy's maps exceed the PSF's bound most (``core.sharpness.cell_map``, in
    sigma), measured again on its MAPS file (~25 ms; the dataset holds only the grid, and the bound is a property
    of the native spaxels); a blank panel, labelled why, where the run has no ``score_sharp`` or the file cannot
    be read here."""
    s = data.run.dataset.size
    blank = np.full((s, s), np.nan)
    cat = data.catalogue
    if sharpness.COLUMN not in cat or not np.isfinite(cat[sharpness.COLUMN].iat[row]):
        return blank, ""
    from core.errors import BlueberryError
    from core.maps import preprocess

    try:
        p = preprocess(cat["source"].iat[row], data.run.dataset.manifest.options)
    except (BlueberryError, OSError):  # moved, or on another machine
        return blank, f"{SHARP}: no file"
    z, _ = sharpness.galaxy_significance(p.maps, p.grid.lines)
    return (blank, "") if z is None else (sharpness.cell_map(z, p.grid.crop, s), SHARP)


def summary_html(data, row: int | None) -> str:
    """The view's sentence: the dominant component and lines."""
    if row is None:
        return "<p>No galaxy inspected.</p>"
    comps = components(data, row)
    col, _, pct = comps[0]
    parts = ", ".join(f"{html.escape(c)} {p:.0f}" for c, _, p in comps)
    cat = data.catalogue
    shares = sorted(((ln, float(cat[f"err_{ln}"].iat[row])) for ln in data.lines if f"err_{ln}" in cat),
                    key=lambda s: -np.nan_to_num(s[1], nan=-1.0))[:TOP_LINES]
    lines = ", ".join(f"{html.escape(ln)} {100 * s:.0f} %" for ln, s in shares)
    disagree = ", ".join(f"{html.escape(ln)} {100 * s:.0f} %" for ln, s in disagreeing_lines(data, row))
    disagree = f"Lines that disagree most with the others (score_consistency): {disagree}. " if disagree else ""
    group = cat[mixing.GROUP_COLUMN].iat[row] if mixing.GROUP_COLUMN in cat else None
    rank = mixing.rank_of(mixing.calibration_of(data.run.manifest.score) or {})
    if isinstance(group, str):
        disagree += (f"The lines that depart most from a mix of {rank} spectra ({mixing.COLUMN}, against galaxies "
                     f"measured as well): {html.escape(group)}. ")
    feature = cat[census.FEATURE_COLUMN].iat[row] if census.FEATURE_COLUMN in cat else None
    if isinstance(feature, str):
        disagree += (f"Most out of step with the survey's galaxies ({census.COLUMN}): {html.escape(feature)} "
                     f"({feature_meaning(feature)}). ")
    disagree += sharp_text(cat, row, dict((c, p) for c, _, p in comps).get(sharpness.COLUMN),
                           data.run.manifest.score.flag_pct)
    return (f'<p style="font-size:13px;margin:2px 0">Dominant component: <b>{html.escape(col)}</b> at percentile '
            f"{pct:.1f} (components' percentiles: {parts}). Lines with the largest shares of the autoencoder's "
            f"error: {lines}. {disagree}"
            f"{where_text(cat, row)}Maps: residuals in units of the score's error (σ with its error model); "
            f"{CROSS_LINE}: the RMS over the lines of each line's misfit when predicted from the others (σ); "
            f"{MIX}: where the ion departs most from the galaxy's mix of {rank} spectra, filtered at the "
            f"scale (cells) that finds it (σ); {SHARP}: how far the maps exceed the most that the PSF lets any sky "
            "give, read again from the galaxy's file (σ, 0 where they do not).</p>")


def sharp_text(cat, row: int, pct: float | None, flag_pct: float) -> str:
    """The sentence on ``score_sharp`` (``core.sharpness``) where it places the galaxy at the run's ``flag_pct``-th
    percentile or above: which line breaks the PSF's bound most, and where; "" elsewhere (every galaxy's noise
    breaks it a little somewhere)."""
    line = cat[sharpness.LINE_COLUMN].iat[row] if sharpness.LINE_COLUMN in cat else None
    if pct is None or not pct >= flag_pct or not isinstance(line, str):
        return ""
    dx, dy = (float(cat[c].iat[row]) for c in (sharpness.DX_COLUMN, sharpness.DY_COLUMN))
    across, up = "right" if dx >= 0 else "left", "up" if dy >= 0 else "down"
    return (f"Sharper than the PSF lets any sky be ({sharpness.COLUMN}; a cosmic ray, a dead fibre, a stripe, or "
            f"noise larger than the file says): most in {html.escape(line)}, {abs(dx):.1f}\" {across} and "
            f"{abs(dy):.1f}\" {up} from the centre on the maps. ")


def feature_meaning(feature: str) -> str:
    """What a ``census_feature`` name (``"OIII-4960 ratio"``, ``"NII dx"``) measures, in words."""
    what = {"ratio": "its total over Hα's", "dy": "its centre's offset from Hα's, up-down",
            "dx": "its centre's offset from Hα's, left-right", "e1": "its elongation against Hα's, along the axes",
            "e2": "its elongation against Hα's, along the diagonals", "size": "its size over Hα's"}
    return what.get(feature.rsplit(" ", 1)[-1], "")


def disagreeing_lines(data, row: int) -> list[tuple[str, float]]:
    """``(line, share)`` of the lines with the largest shares of the galaxy's ``score_consistency``
    (``core.consistency.galaxy_scores``, cached by embed), largest first; [] for a run without them."""
    cached = data.run.consistency_lines
    if cached is None or not np.isfinite(cached[row]).all():
        return []
    shares = np.asarray(cached[row], dtype=np.float64)
    return [(data.lines[i], float(shares[i])) for i in np.argsort(-shares)[:TOP_LINES]]


def where_text(cat, row: int) -> str:
    """Where on the galaxy the score comes from (``core.scoring.SHAPE_COLUMNS``), each value with its
    percentile in the run, so that "off-centre" means off-centre for this survey; '' for a run without them."""
    if not all(c in cat for c in scoring.SHAPE_COLUMNS) or not np.isfinite(cat["resid_offset"].iat[row]):
        return ""

    def pct(col: str) -> str:
        values = cat[col].to_numpy(np.float64)
        return f"{100 * np.mean(values[np.isfinite(values)] <= values[row]):.0f}th pct"

    offset, peak = float(cat["resid_offset"].iat[row]), float(cat["resid_peak"].iat[row])
    elong = float(cat["resid_elong"].iat[row])
    return (f"Where: centroid {offset:.2f} half-widths from the centre ({pct('resid_offset')}), "
            f"{100 * peak:.0f} % of it in the {scoring.SHAPE_TOP_CELLS:.0%} worst cells ({pct('resid_peak')}), "
            f"elongation {elong:.2f} ({pct('resid_elong')}). ")


class WhyOdd(StateView):
    """Why the inspected galaxy is odd: components, lines, residual and ratio maps, in one figure."""

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        s = data.run.dataset.size
        scale = MOSAIC_PX / (len(RATIO_MAPS) * (s + 1))  # screen pixels per spaxel, both mosaics
        self._where = Mosaic(WHERE_PANELS, s, WHERE_COLUMNS, px_per_spaxel=scale)
        self._ratio = Mosaic(2 * len(RATIO_MAPS), s, len(RATIO_MAPS), px_per_spaxel=scale)
        self._px = MOSAIC_PX / self._ratio.width
        self._fig = self._figure()
        self.watch(self._update, "galaxy")

    def _content(self) -> dict:
        data, row = self.state.data, self.state.row
        if row is not None:
            return explain(data, row)
        s = data.run.dataset.size
        return {"where": np.full((WHERE_PANELS, s, s), np.nan, np.float32), "where_labels": [""] * WHERE_PANELS,
                "ratios": np.full((2 * len(RATIO_MAPS), s, s), np.nan, np.float32),
                "ratio_labels": [""] * (2 * len(RATIO_MAPS))}

    def _figure(self):
        from bokeh.models import ColorBar, HoverTool, LinearColorMapper
        from bokeh.palettes import RdBu11, Viridis256, interp_palette

        px, where, ratio = self._px, self._where, self._ratio
        height = TITLE_PX + max(where.height, ratio.height) * px
        ratio_left = where.width * px + COLOUR_BAR_PX
        width = ratio_left + ratio.width * px + COLOUR_BAR_PX
        fig = plain_figure(width / px, height / px, px, name="why")
        content = self._content()
        r = symmetric_limit(content["where"])
        self._where_mapper = LinearColorMapper(palette=interp_palette(RdBu11, 256)[::-1], low=-r, high=r,
                                               nan_color=MASKED)
        ratios = LinearColorMapper(palette=Viridis256, low=RATIO_RANGE[0], high=RATIO_RANGE[1], nan_color=MASKED)
        top = height / px - TITLE_PX / px
        self._images, self._labels = {}, {}
        for key, mosaic, mapper, left, label, title in (
                ("where", where, self._where_mapper, 0.0, "σ", "Where: residual / error"),
                ("ratios", ratio, ratios, ratio_left, "log ratio", "Line ratios (log)")):
            at = (left / px, top - mosaic.height)
            self._images[key], self._labels[key] = mosaic.draw(fig, content[key], mapper, content[LABELS[key]], at=at)
            fig.add_tools(HoverTool(renderers=[self._images[key]], tooltips=[(label, "@image{0.00}")]))
            bar_at = (left + mosaic.width * px + 6, 0.1 * mosaic.height * px)
            fig.add_layout(ColorBar(color_mapper=mapper, location=bar_at,
                                    width=10, height=int(0.8 * mosaic.height * px), title=label, title_standoff=4,
                                    title_text_font_size="10px", major_label_text_font_size="10px", padding=0,
                                    background_fill_alpha=0), "center")
            fig.text(x=[left / px], y=[(height - TITLE_PX / 2) / px], text=[title], text_font_size="13px",
                     text_font_style="bold", text_color="#222", text_baseline="middle")
        return fig

    def _update(self) -> None:
        content = self._content()
        for key, mosaic in (("where", self._where), ("ratios", self._ratio)):
            source = self._images[key].data_source
            change(source, data={**source.data, "image": mosaic.images(content[key])})
            change(self._labels[key], data={**self._labels[key].data, "text": list(content[LABELS[key]])})
        r = symmetric_limit(content["where"])
        change(self._where_mapper, low=-r, high=r)

    def __panel__(self):
        text = pn.pane.HTML(pn.bind(lambda _: summary_html(self.state.data, self.state.row), self.state.param.galaxy),
                            sizing_mode="stretch_width")
        return pn.Column(section_title("Why it is odd"), text, pn.pane.Bokeh(self._fig, margin=(0, 5)),
                         stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
