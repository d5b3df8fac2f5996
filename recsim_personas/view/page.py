"""The view page: one self-contained HTML file (plotly.js and the run's data inlined; no network, no server).

Why a file and not a local app: it opens offline in any browser, can be mailed or archived beside the report it
describes, and needs no process running; ``recsim-personas view --port N`` only serves that same file.

The page has four views, switched by tabs:

- **Report** — the gap report's offline metric against the simulated one per policy, with the simulated 95%
  intervals, the simulated headline per policy, and the fidelity suite's preference alignment beside its
  baselines (Plotly figures built here with ``plotly.graph_objects``);
- **Users** — the traced users: demographics, trait levels and scores, persona text and cluster, the real train
  history and held-out test ratings beside the movies each simulation had them watch, and the rating histograms
  (real train, real test, simulated);
- **Sessions** — a trace's sessions of one user, replayed page by page: each shown movie with the rater's
  distribution (a heatmap per page), the chance to watch, what was watched and rated, and how the session ended;
- **Compare** — two policies on the same user and seed, side by side.

The browser-side code (``view.js`` beside this module) only lays out tables and calls ``Plotly.newPlot``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

TITLE = "recsim-personas view"


def report_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The Report tab's Plotly figures (as JSON-ready dicts), from the gap report and the fidelity summary."""
    import plotly.graph_objects as go

    figs: dict[str, Any] = {}
    gap = data.get("gap")
    if gap and gap.get("results"):
        head = gap.get("headline", {})
        off_key = str(head.get("offline", "ndcg@10")).split("@")[0]
        sim_key = str(head.get("simulated", "likes_per_user"))
        names = [r["policy"] for r in gap["results"]]
        sim = [r["simulated"][sim_key] for r in gap["results"]]
        off = [r["offline"][off_key] for r in gap["results"]]
        fig = go.Figure(
            go.Scatter(
                x=off,
                y=[s["mean"] for s in sim],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [s["high"] - s["mean"] for s in sim],
                    "arrayminus": [s["mean"] - s["low"] for s in sim],
                },
                mode="markers+text",
                text=names,
                textposition="top center",
                marker={"size": 11},
            )
        )
        fig.update_layout(
            title=f"Offline {head.get('offline', off_key)} against simulated {sim_key} (95% intervals over seeds)",
            xaxis_title=f"offline {head.get('offline', off_key)}",
            yaxis_title=f"simulated {sim_key}",
            height=460,
            margin={"t": 60},
        )
        figs["gap_scatter"] = fig.to_plotly_json()
        order = sorted(range(len(names)), key=lambda i: -sim[i]["mean"])
        bar = go.Figure(
            go.Bar(
                x=[names[i] for i in order],
                y=[sim[i]["mean"] for i in order],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [sim[i]["high"] - sim[i]["mean"] for i in order],
                    "arrayminus": [sim[i]["mean"] - sim[i]["low"] for i in order],
                },
            )
        )
        bar.update_layout(title=f"Simulated {sim_key} per policy", yaxis_title=sim_key, height=380, margin={"t": 60})
        figs["gap_bars"] = bar.to_plotly_json()
    fid = data.get("fidelity")
    alignment = (fid or {}).get("alignment") or ((gap or {}).get("fidelity") or {}).get("alignment")
    if alignment:  # the fidelity suite's, else the one the gap report carries (same test, same keys)
        ratios = sorted(alignment, key=int)
        series = {"simulated users": [alignment[m]["roc_auc"] for m in ratios]}
        for b in alignment[ratios[0]]["baselines"]:
            series[b] = [alignment[m]["baselines"][b] for m in ratios]
        fig = go.Figure([go.Bar(name=k, x=[f"{m} : 1" for m in ratios], y=v) for k, v in series.items()])
        fig.update_layout(
            barmode="group",
            title="Preference alignment: ROC-AUC of picking the real next movies among random ones",
            yaxis={"title": "ROC-AUC", "range": [0.4, 1.0]},
            xaxis_title="random : real",
            height=380,
            margin={"t": 60},
        )
        figs["alignment"] = fig.to_plotly_json()
    return figs


def render(data: dict[str, Any]) -> str:
    """The page's HTML (self-contained)."""
    from plotly.offline import get_plotlyjs

    payload = {**data, "figures": report_figures(data)}
    blob = json.dumps(payload, separators=(",", ":"), default=_default).replace("</", "<\\/")
    script = resources.files("recsim_personas.view").joinpath("view.js").read_text(encoding="utf-8")
    style = resources.files("recsim_personas.view").joinpath("view.css").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{TITLE}</title><style>{style}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        "<header><h1>recsim-personas</h1><nav id='tabs'></nav><span id='run'></span></header>"
        "<main id='main'><p id='loading'>loading…</p></main>"
        f"<script id='data' type='application/json'>{blob}</script>"
        f"<script>{script}</script></body></html>\n"
    )


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
