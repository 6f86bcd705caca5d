"""The run as the dashboard reads it: loaded once per server, shared by every session, read-only.

:func:`open_app_data` opens a run directory (``core.run.open_run``) and derives what every
view needs fast: float64 coordinate arrays of the latent map and the BPT diagrams, the
galaxies in anomaly order, a galaxy_id lookup, the colour-by choices, and the per-galaxy
line maps for the inspector. Nothing here imports torch, umap, numba or datashader.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from core.bpt import RATIOS
from core.errors import RunError
from core.export import model_summary as describe_model  # the run's model in one line, as exports record it
from core.run import Evaluation, Run, open_run

#: Where the dashboard looks for a run when neither ``--args --run`` nor BLUEBERRY_RUN says.

#: The BPT diagrams: key -> (x column, x-axis label). All share log([OIII]/Hb) as y.
_NII_HA, _OIII_HB, _SII_HA, _OI_HA = RATIOS
DIAGRAMS = {
    "nii": (_NII_HA, "log [NII]6585 / Hα"),
    "sii": (_SII_HA, "log [SII]6718,6732 / Hα"),
    "oi": (_OI_HA, "log [OI]6302 / Hα"),
}
BPT_Y = (_OIII_HB, "log [OIII]5008 / Hβ")

#: Catalogue columns the views read (the table's, the inspector's, the maps' coordinates).
REQUIRED_COLUMNS = ("galaxy_id", "ra", "dec", "z", "anomaly_score", "anomaly_pct", "flagged", "top_line", "umap_x",
                    "umap_y", "bpt_class", *RATIOS)

#: Columns of the selection table, in order.
TABLE_COLUMNS = ("galaxy_id", "anomaly_score", "anomaly_pct", "bpt_class", "z", "top_line")

#: A text column is offered as a categorical colouring when it has at most this many values.
MAX_CATEGORIES = 40
#: How many colouring frames (N rows x 3 columns each) stay in memory, shared by all sessions.
COLOUR_FRAMES_KEPT = 4
#: Colourings listed first, when the catalogue has them.
PREFERRED_COLOURS = ("anomaly_score", "bpt_class", "truth_class", "anomaly_pct")


@dataclass
class AppData:
    """One run, prepared for the dashboard. Arrays are float64, C-contiguous and writable."""

    run: Run
    catalogue: pd.DataFrame
    x: np.ndarray  # umap_x
    y: np.ndarray  # umap_y
    score: np.ndarray  # anomaly_score
    order: np.ndarray  # rows by anomaly score, highest first
    bpt: dict  # diagram key -> (x, y) arrays
    numeric_colours: tuple[str, ...]
    categorical_colours: tuple[str, ...]
    frames: dict  # "latent" and each BPT diagram key -> DataFrame with float64 columns x, y
    median: float
    p90: float
    _ids: pd.Index = field(repr=False)
    _colour_frames: dict = field(default_factory=dict, repr=False)
    _derived: dict = field(default_factory=dict, repr=False)
    _extra_colours: dict = field(default_factory=dict, repr=False)  # name -> (N,) float64, not catalogue columns

    @property
    def name(self) -> str:
        return str(self.run.manifest.name or self.run.name)

    @property
    def n(self) -> int:
        return len(self.catalogue)

    @property
    def lines(self) -> tuple[str, ...]:
        return self.run.lines

    @property
    def flagged(self) -> np.ndarray:
        return self.catalogue["flagged"].to_numpy(dtype=bool)

    @property
    def colour_options(self) -> tuple[str, ...]:
        return tuple(sorted(self.numeric_colours + self.categorical_colours + tuple(self._extra_colours),
                            key=_colour_rank))

    def set_colouring(self, name: str, values: np.ndarray) -> None:
        """Offer (or replace) a numeric colouring that is not a catalogue column, e.g. the ranking's
        relevance (``dashboard.discovery``); every session sees it from its next redraw."""
        self._extra_colours[name] = np.array(values, dtype=np.float64)
        self._colour_frames.pop(name, None)

    @property
    def added_text_columns(self) -> tuple[str, ...]:
        """Text columns that ingest's DAPall join or ``annotate`` added: the selection table shows them
        (their numbers are colourings, like every numeric column)."""
        added = [c for j in self.run.dataset.manifest.joins for c in j.get("columns", ())]
        added += [c for a in self.run.manifest.annotations for c in a.get("columns", ())]
        return tuple(c for c in dict.fromkeys(added)
                     if c in self.catalogue.columns and pd.api.types.is_string_dtype(self.catalogue[c]))

    @cached_property
    def table_base(self) -> pd.DataFrame:
        """The selection table's columns of every galaxy, text as pandas categories: taking 10^5-10^6
        rows of those takes integer codes, many times faster than Arrow-backed or object strings."""
        cols = [c for c in (*TABLE_COLUMNS, *self.added_text_columns) if c in self.catalogue.columns]
        return pd.DataFrame({c: self.catalogue[c].astype("category") if pd.api.types.is_string_dtype(self.catalogue[c])
                             else self.catalogue[c].to_numpy() for c in cols})

    def derived(self, key, compute):
        """A value derived from the run (e.g. an axis range), computed once and shared by every session."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def colour_frame(self, col: str) -> pd.DataFrame:
        """Latent coordinates plus one colouring column ``v`` (float64, or a pandas category), shared.

        Every datashaded plot gets frames with the same column names and dtypes (x, y and
        maybe v), because datashader compiles one numba kernel per schema: uniform frames
        mean a handful of compilations (done at warm-up) instead of one per column.
        """
        if col not in self._colour_frames:
            if col in self._extra_colours:
                v = self._extra_colours[col]
            elif col in self.categorical_colours:
                v = self.catalogue[col].astype(str).astype("category")
            elif col in self.numeric_colours:
                v = self.catalogue[col].to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                raise KeyError(f"{col!r} is not a colouring of this run; choose one of {', '.join(self.colour_options)}")
            if len(self._colour_frames) >= COLOUR_FRAMES_KEPT:
                self._colour_frames.pop(next(iter(self._colour_frames)))
            self._colour_frames[col] = self.frames["latent"].assign(v=v)
        return self._colour_frames[col]

    def row_of(self, galaxy_id: str) -> int | None:
        """Row number of a galaxy_id, or None when the run has no such galaxy."""
        try:
            loc = self._ids.get_loc(galaxy_id)
        except KeyError:
            return None
        return int(loc) if isinstance(loc, (int, np.integer)) else None

    def rows_of(self, galaxy_ids) -> np.ndarray:
        """Row numbers of many galaxy_ids at once, -1 for an id the run does not have."""
        return self._ids.get_indexer(pd.Index([str(g) for g in galaxy_ids]))

    def by_score(self, mask: np.ndarray) -> np.ndarray:
        """The rows where ``mask`` is True, most anomalous first."""
        return self.order[mask[self.order]]

    def galaxy_maps(self, row: int) -> dict:
        """The inspector's maps of one galaxy, each (L, S, S) float32 with NaN where masked.

        ``data``, ``model`` and ``residual`` (data - model) are divided by ``scale`` (L,), each
        line's robust peak (99th percentile of |data|), so faint and bright lines share one
        colour scale; masked spaxels stay NaN in all three: a masked spaxel is unknown, not 0.
        """
        ds = self.run.dataset
        mask = np.asarray(ds.mask[row], dtype=bool)
        data = np.where(mask, np.nan, np.asarray(ds.flux[row], dtype=np.float32))
        model = np.where(mask, np.nan, np.asarray(self.run.recon[row], dtype=np.float32))
        scale = peaks(data)
        s = scale[:, None, None]
        return {"data": data / s, "model": model / s, "residual": (data - model) / s, "scale": scale,
                "bpt_map": np.asarray(ds.bpt_map[row])}


def peaks(maps: np.ndarray) -> np.ndarray:
    """Each map's robust peak, the 99th percentile of |value| over its finite (unmasked) spaxels; 1
    where that is not positive. (n, S, S) maps -> (n,) float32. Every map the app draws is "scaled
    to its own peak" by this, so faint and bright lines share one colour scale."""
    finite = np.abs(maps.reshape(len(maps), -1))  # (n, S, S) -> (n, S * S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-masked map has no peak: it gets 1 below
        scale = np.nanpercentile(finite, 99, axis=1)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)


def _colour_rank(col: str):
    return (PREFERRED_COLOURS.index(col) if col in PREFERRED_COLOURS else len(PREFERRED_COLOURS), col)


def _f64(a) -> np.ndarray:
    # A private writable copy: pandas 3 hands out read-only views, and numba compiles a
    # separate specialisation for those; every kernel call then sees one array type.
    return np.array(a, dtype=np.float64, order="C", copy=True)


def open_app_data(path) -> AppData:
    """Open the run at ``path``; raises ``core.errors.BlueberryError`` (RunError, DatasetError) with what to do."""
    run = open_run(path)
    cat = run.catalogue
    missing = [c for c in REQUIRED_COLUMNS if c not in cat.columns]
    if missing:
        raise RunError(f"{run.path}/catalogue.parquet lacks the column(s) {', '.join(missing)} that `embed` writes; "
                       f"run `python -m train embed --run {run.path}` again")
    score = _f64(cat["anomaly_score"])
    # A stable sort keeps ties in catalogue order, so the table order is reproducible.
    order = np.argsort(-score, kind="stable")
    numeric, categorical = [], []
    for col in cat.columns:
        if col in ("galaxy_id", "umap_x", "umap_y"):
            continue
        s = cat[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_string_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            if s.nunique(dropna=True) <= MAX_CATEGORIES:
                categorical.append(col)
        elif pd.api.types.is_numeric_dtype(s):
            numeric.append(col)
    x, y = _f64(cat["umap_x"]), _f64(cat["umap_y"])
    bpt_xy = {key: (_f64(cat[col]), _f64(cat[BPT_Y[0]])) for key, (col, _) in DIAGRAMS.items()}
    frames = {key: pd.DataFrame({"x": a, "y": b}) for key, (a, b) in {"latent": (x, y), **bpt_xy}.items()}
    score_meta = run.manifest.score
    return AppData(
        run=run, catalogue=cat, x=x, y=y, score=score, order=order, bpt=bpt_xy,
        numeric_colours=tuple(numeric), categorical_colours=tuple(categorical), frames=frames,
        median=float(score_meta.median if score_meta else np.median(score)),
        p90=float(score_meta.p90 if score_meta else np.percentile(score, 90)),
        _ids=pd.Index(cat["galaxy_id"].astype(str)),
    )


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


#: Bookkeeping entries of the manifest's evaluation, not figures.
_EVAL_SKIP = ("file", "seconds", "catalogue_sha256")
_EVAL_NAMES = {"roc_auc": "ROC-AUC", "average_precision": "AP"}


def evaluation_figures(evaluation: Evaluation | None) -> dict[str, str]:
    """The evaluation figures of the manifest, label -> text ("model" -> "ROC-AUC 0.912, AP 0.587")."""
    out = {}
    for key, value in (asdict(evaluation) if evaluation else {}).items():
        if key in _EVAL_SKIP or value is None:
            continue
        if isinstance(value, dict):
            parts = [f"{_EVAL_NAMES.get(k, k)} {_fmt(v)}" for k, v in value.items()
                     if isinstance(v, (int, float, np.number, str, bool)) and k not in _EVAL_SKIP]
            if parts:
                out[str(key)] = ", ".join(parts)
        elif isinstance(value, (int, float, np.number, str, bool)):
            out[str(key)] = _fmt(value)
    return out


def injection_figures(data: AppData) -> tuple[str, list[str]] | None:
    """The injection benchmark at a glance: ``(headline, one line per kind)``, None without a current one.

    Headline: "median percentile 60 at strength 0.5, 15 % flagged over 17 kinds (untouched 54)", and over the
    perturbations plain in the noise where some were not ("; over the 81 % of changes plain in the noise 98, ..."),
    then the same for every other detector the benchmark measured ("; score_consistency 65, ...");
    the per-kind lines give each kind's median percentile and % flagged at that strength, per detector.
    Read once per server (``AppData.derived``).
    """
    def compute():
        from core.inject import read_injection

        result = read_injection(data.run)
        head = (result or {}).get("headline", {}).get("anomaly_score")
        if not head or head.get("median_pct") is None:
            return None
        middle = [r for r in result["rows"] if r["strength"] == head["strength"] and r["family"] != "control"]
        text = (f"median percentile {head['median_pct']:.0f} at strength {head['strength']:g}, "
                f"{100 * head['flagged']:.0f} % flagged over {len(middle)} kinds (untouched {head['control_pct']:.0f})")
        plain = head.get("detectable") or {}
        if plain.get("median_pct") is not None and plain["share"] < 1:  # some changes were lost in the noise
            text += (f"; over the {100 * plain['share']:.0f} % of changes plain in the noise {plain['median_pct']:.0f}, "
                     f"{100 * plain['flagged']:.0f} % flagged")
        # The other detectors (score_<name> columns), each after the anomaly score: "; score_consistency 65 ...".
        others = [c for c in result.get("scores", []) if c != "anomaly_score"
                  and (result["headline"].get(c) or {}).get("median_pct") is not None]
        for col in others:
            h = result["headline"][col]
            text += (f"; {col} {h['median_pct']:.0f}, {100 * h['flagged']:.0f} % flagged "
                     f"(untouched {h['control_pct']:.0f})")

        def cell(row, col):
            return f"{row[col]['median_pct']:.0f}, {100 * row[col]['flagged']:.0f} % flagged"

        def plain_in_noise(row):
            n, seen = row.get("n"), row.get("n_detectable")
            return f" ({seen} of {n} plain in the noise)" if n is not None and seen is not None and seen < n else ""

        detail = [f"{r['kind']} ({r['family']}): {cell(r, 'anomaly_score')}{plain_in_noise(r)}"
                  + "".join(f"; {c} {cell(r, c)}" for c in others if (r.get(c) or {}).get("median_pct") is not None)
                  for r in middle if r["anomaly_score"]["median_pct"] is not None]
        return text, detail
    return data.derived("injection", compute)


def run_summary(data: AppData) -> dict[str, str]:
    """The header's figures of the run, label -> text, in display order (evaluation apart)."""
    m = data.run.manifest
    lines = data.lines
    return {
        "Run": data.name,
        "Galaxies": f"{data.n:,}",
        "Model": describe_model(m),
        "Lines": f"{len(lines)} ({lines[0]} … {lines[-1]})" if lines else "none",
        "Normalisation": m.norm,
        "Median score": _fmt(data.median),
        "90th percentile": _fmt(data.p90),
    }
