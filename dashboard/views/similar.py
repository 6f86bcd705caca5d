"""The inspected galaxy's nearest neighbours in latent space, as a gallery of thumbnails."""
from __future__ import annotations

import numpy as np
import panel as pn

from dashboard.data import peaks
from dashboard.views.base import PANEL_CSS, StateView, change, section_title
from dashboard.views.glyphs import MASKED, Mosaic, plain_figure

#: Width of the gallery in screen pixels.
GALLERY_WIDTH = 420
#: Thumbnails per row (fewer when there are fewer neighbours).
GALLERY_COLUMNS = 4


class SimilarGalaxies(StateView):
    """The inspected galaxy's nearest neighbours in latent space: Hα maps, ids and scores; a tap on
    one inspects it."""

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._k = data.run.neighbours.shape[1]
        self._line = data.lines.index("Ha-6564") if "Ha-6564" in data.lines else 0
        ncols = min(self._k, GALLERY_COLUMNS)
        s = data.run.dataset.size
        self._mosaic = Mosaic(self._k, s, ncols, px_per_spaxel=GALLERY_WIDTH / (ncols * (s + 1)))
        self._images, self._captions = None, None
        self.watch(self._update, "galaxy")

    def _thumbnails(self) -> tuple[np.ndarray, list[str]]:
        """The neighbours' maps of the line, each scaled to its own peak, and their captions."""
        data, ds = self.state.data, self.state.data.run.dataset
        rows = self.state.neighbours[:self._k]
        maps = np.where(ds.mask[rows, self._line], np.nan, ds.flux[rows, self._line]).astype(np.float32)
        if len(rows):
            maps /= peaks(maps)[:, None, None]
        cat = data.catalogue.iloc[rows]
        return maps, [f"{g} · {s:,.0f}" for g, s in zip(cat["galaxy_id"], cat["anomaly_score"])]

    def _update(self) -> None:
        maps, labels = self._thumbnails()
        change(self._images.data_source, data={**self._images.data_source.data, "image": self._mosaic.images(maps)})
        change(self._captions, data={**self._captions.data, "text": labels + [""] * (self._k - len(labels))})

    def _tapped(self, event) -> None:
        j = self._mosaic.panel_at(event.x, event.y)
        rows = self.state.neighbours
        if j is not None and j < len(rows):
            self.state.inspect(int(rows[j]))

    def _gallery(self):
        from bokeh.events import Tap
        from bokeh.models import HoverTool, LinearColorMapper, TapTool
        from bokeh.palettes import Viridis256

        mosaic = self._mosaic
        line = self.state.data.lines[self._line].split("-")[0]
        fig = plain_figure(mosaic.width, mosaic.height, GALLERY_WIDTH / mosaic.width, name="neighbours",
                           title=f"{line} maps (id · score); tap one to inspect it")
        mapper = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0, nan_color=MASKED)
        maps, labels = self._thumbnails()
        self._images, self._captions = mosaic.draw(fig, maps, mapper, labels, label_size="8pt")
        fig.add_tools(TapTool(), HoverTool(renderers=[self._images], tooltips=[(f"{line} / peak", "@image{0.00}")]))
        fig.on_event(Tap, self._tapped)
        return fig

    def __panel__(self):
        button = pn.widgets.Button(label="Select these neighbours", width=200)
        button.on_click(lambda _: self.state.select_neighbours())
        return pn.Column(pn.Row(section_title("Similar galaxies", "nearest in latent space", margin=(8, 10)), button),
                         pn.pane.Bokeh(self._gallery(), margin=(0, 5)), stylesheets=[PANEL_CSS])
