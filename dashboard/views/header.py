"""The run at a glance, above everything."""
from __future__ import annotations

import html

import panel as pn

from dashboard.data import evaluation_figures, injection_figures, run_summary
from dashboard.views.base import StateView


class Header(StateView):
    """The run at a glance: name, size, model, lines, normalisation, score quantiles, evaluation, injection."""

    def __panel__(self):
        data = self.state.data
        cells = "".join(f'<div class="bb-stat"><div class="bb-label">{html.escape(k)}</div>'
                        f'<div class="bb-value">{html.escape(v)}</div></div>' for k, v in run_summary(data).items())
        ev = evaluation_figures(data.run.evaluation)
        if ev:
            cells += ('<div class="bb-stat bb-eval"><div class="bb-label">Evaluation</div><div class="bb-value">'
                      + "<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in ev.items()) + "</div></div>")
        injection = injection_figures(data)
        if injection:  # the per-kind figures in the tooltip: one line each
            text, detail = injection
            cells += (f'<div class="bb-stat bb-eval" title="{html.escape(chr(10).join(detail))}">'
                      f'<div class="bb-label">Injection benchmark</div><div class="bb-value">{html.escape(text)}'
                      "</div></div>")
        lines = ", ".join(data.lines)
        return pn.pane.HTML(
            '<div class="bb-banner"><span class="bb-title">Blueberry</span>'
            '<span class="bb-sub">odd galaxies in integral-field surveys</span></div>'
            f'<div class="bb-header" title="Lines: {html.escape(lines)}">{cells}</div>',
            stylesheets=["""
            .bb-banner { background: #3b4cc0; color: white; padding: 8px 16px; margin-bottom: 8px;
                         font-family: sans-serif; }
            .bb-title { font-size: 22px; font-weight: 700; margin-right: 14px; }
            .bb-sub { font-size: 13px; opacity: .85; }
            .bb-header { display: flex; flex-wrap: wrap; gap: 6px 22px; font-family: sans-serif; padding: 0 16px 6px; }
            .bb-label { font-size: 11px; color: #666; text-transform: uppercase; letter-spacing: .04em; }
            .bb-value { font-size: 15px; font-weight: 600; color: #222; }
            .bb-eval .bb-value { font-size: 12px; font-weight: 500; }
            """], sizing_mode="stretch_width", margin=(0, 0, 8, 0), styles={"background": "white"})
