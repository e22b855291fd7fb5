"""Charts of the attention-sink measure (explorer.analysis.sinks): per head, the score of the judged
token against the threshold; a bar per head for one layer, a layer x head heatmap for several."""
from __future__ import annotations

import plotly.graph_objects as go

from explorer.analysis.sinks import SinkMeasure
from explorer.figures.common import SEQUENTIAL

SINK, OTHER = "#d62728", "#7f7f7f"  # heads above the threshold, and below it


def sink_chart(measure: SinkMeasure, height: int = 380) -> go.Figure:
    """The judged token's score (attention received per query that sees it) in every head."""
    scores, share = measure.token_scores, measure.share
    title = (f"Sink score of token {measure.token} per head: {share:.0%} of heads above {measure.threshold:g}")
    if len(measure.layers) == 1:
        fig = go.Figure(go.Bar(
            x=[f"head {h}" for h in range(scores.shape[1])], y=scores[0], name="sink score",
            marker={"color": [SINK if s else OTHER for s in measure.sink_heads[0]]},
            hovertemplate="%{x}<br>score %{y:.3f}<extra></extra>"))
        fig.add_hline(y=measure.threshold, line={"dash": "dash", "color": "grey"},
                      annotation_text=f"threshold {measure.threshold:g}")
        fig.update_yaxes(title_text="score", range=[0, max(1.0, float(scores.max()))])
        fig.update_xaxes(title_text=f"head (layer {measure.layers[0]})")
    else:
        fig = go.Figure(go.Heatmap(
            z=scores, x=[f"head {h}" for h in range(scores.shape[1])], y=[f"layer {x}" for x in measure.layers],
            zmin=0, zmax=1, colorscale=SEQUENTIAL, colorbar={"title": "score"},
            text=[["sink" if s else "" for s in row] for row in measure.sink_heads], texttemplate="%{text}",
            hovertemplate="%{y}, %{x}<br>score %{z:.3f}<extra></extra>"))
        fig.update_yaxes(title_text="layer", autorange="reversed")
        fig.update_xaxes(title_text="head")
    fig.update_layout(title=title, height=height, margin={"l": 60, "r": 10, "t": 40, "b": 40})
    return fig
