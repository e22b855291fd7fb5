"""Charts of the score-dilution page: a statistic against prefix length (median line
and interquartile band per curve, theory lines beside), the planted needle's
weight against n, the question's attention onto a passage of real text, the
same curves without and with a remedy, and the remedies' reference setup.
Data in (explorer.analysis results), plotly figures out; every chart colours a
curve the same way (colours), dense neutral.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.analysis import remedies
from explorer.analysis.dilution import LABELS, Curves, Needle
from explorer.analysis.experiment import DENSE
from explorer.analysis.needle_text import TextNeedle
from explorer.figures import colours, common

MARGIN = {"l": 60, "r": 10, "t": 40, "b": 40}
THEORY_DASHES = ("dash", "dot", "dashdot", "longdash")


def _theory_lines(fig: go.Figure, x, theory: dict[str, np.ndarray], dash: str | None = None) -> None:
    for i, (name, y) in enumerate(theory.items()):
        fig.add_trace(go.Scatter(x=x, y=np.asarray(y, dtype=float), name=name, mode="lines",
                                 line={"color": "grey", "width": 1.5,
                                       "dash": dash or THEORY_DASHES[i % len(THEORY_DASHES)]},
                                 hovertemplate=name + "<br>n %{x}<br>%{y:.4g}<extra></extra>"))


def _y_axis(values: list, log: bool) -> dict:
    """A log axis fitted to every value drawn (ticks at powers of ten), or a linear one."""
    return common.log_axis(np.concatenate([np.ravel(v) for v in values])) if log else {"type": "linear"}


def band_chart(curves: Curves, metric: str, theory: dict[str, dict[str, np.ndarray]] | None = None,
               log_y: bool = False, title: str = "", height: int = 440) -> go.Figure:
    """One statistic against prefix length on a log x axis: per curve the median over the
    sampled queries as a line and the 25-75% band shaded; theory lines dashed grey."""
    x = np.asarray(curves.lengths)
    label = LABELS[metric].replace("top-k", f"top-{curves.topk}")
    fig = go.Figure()
    for name, colour in colours.series_colours(colours.dense_last(curves.bands)).items():
        band, shown = curves.bands[name][metric], colours.title_of(name)
        fig.add_trace(common.shaded(x, band[:, 2], band[:, 0], colour, legendgroup=name, name=f"{shown} 25-75%"))
        fig.add_trace(go.Scatter(
            x=x, y=band[:, 1], name=shown, mode="lines+markers", legendgroup=name, marker={"size": 5},
            line={"color": colour, "width": 2.5 if name == DENSE else 2}, customdata=band[:, [0, 2]],
            hovertemplate=shown + "<br>prefix %{x} tokens<br>median %{y:.4g}<br>"
                          "25-75%: %{customdata[0]:.4g} – %{customdata[1]:.4g}<extra></extra>"))
    _theory_lines(fig, x, {name: rows[metric] for name, rows in (theory or {}).items()})
    fig.update_layout(title=title or f"{label} against prefix length", height=height, margin=MARGIN,
                      hovermode="closest")
    fig.update_xaxes(common.log_axis(x, counts=True), title_text="prefix length (tokens, log)")
    bands = [b[metric] for b in curves.bands.values()] + [rows[metric] for rows in (theory or {}).values()]
    fig.update_yaxes(_y_axis(bands, log_y), title_text=label + (" (log)" if log_y else ""))
    return common.legend_below(fig)


def needle_chart(needle: Needle, log_y: bool = False, height: int = 440) -> go.Figure:
    """The needle query's weight on its key against n (mean over heads), theory dashed.

    Hollow markers: the mechanism cannot reach the needle key at that n (in any head).
    """
    x = np.asarray(needle.lengths)
    fig = go.Figure()
    shown = []
    for name, colour in colours.series_colours(colours.dense_last(needle.weight)).items():
        w = needle.weight[name].mean(1)
        reach = needle.reach[name].any(1)
        shown.append(np.abs(w) if log_y else w)
        fig.add_trace(go.Scatter(
            x=x, y=shown[-1], name=colours.title_of(name), mode="lines+markers",
            line={"color": colour, "width": 2.5 if name == DENSE else 2},
            marker={"size": 8, "symbol": np.where(reach, "circle", "circle-open").tolist()},
            customdata=np.stack([w, reach.astype(float)], 1),
            hovertemplate=colours.title_of(name) + "<br>n %{x}<br>needle weight %{customdata[0]:.4g}"
                                 "<br>reachable: %{customdata[1]:.0f}<extra></extra>"))
    theory = needle.theory()
    _theory_lines(fig, x, theory)
    fig.update_layout(title=f"Needle weight against n (margin {needle.margin:g}, noise {needle.noise:g})",
                      height=height, margin=MARGIN)
    fig.update_xaxes(common.log_axis(x, counts=True), title_text="sequence length n (log)")
    fig.update_yaxes(_y_axis(shown + list(theory.values()), log_y),
                     title_text="|weight| on the needle key (log)" if log_y else "weight on the needle key")
    return common.legend_below(fig)


def _line(fig: go.Figure, name: str, x, y, colour: str, dash: str = "solid", group: str | None = None,
          hover: str = "%{y:.4g}") -> None:
    group, shown = group or name, colours.title_of(name)
    fig.add_trace(go.Scatter(x=x, y=y, name=shown, mode="lines+markers", legendgroup=group, marker={"size": 6},
                             line={"color": colour, "width": 2.5 if group == DENSE else 2, "dash": dash},
                             hovertemplate=shown + "<br>%{x}<br>" + hover + "<extra></extra>"))


def text_chart(text: TextNeedle, x: str = "n", log_y: bool = False, height: int = 440) -> go.Figure:
    """Attention mass from the question's tokens onto the passage against n (log axis) or the
    distance (filler tokens between them, linear axis): per curve the mean over heads and question
    tokens, the 25-75% band shaded; a uniform row's share dashed grey."""
    if x not in ("n", "distance"):
        raise ValueError(f"x={x!r} must be 'n' or 'distance'")
    xs = np.asarray(text.lengths if x == "n" else text.fillers)
    fig = go.Figure()
    for name, colour in colours.series_colours(colours.dense_last(text.mass)).items():
        flat = text.mass[name].reshape(len(xs), -1)
        lo, hi = np.quantile(flat, 0.25, axis=1), np.quantile(flat, 0.75, axis=1)
        fig.add_trace(common.shaded(xs, hi, lo, colour, legendgroup=name, name=f"{colours.title_of(name)} 25-75%"))
        _line(fig, name, xs, text.mean(name), colour, hover="mass on the passage %{y:.4g}")
    _theory_lines(fig, xs, {"uniform row (keys seen)": np.asarray(text.uniform)})
    fig.update_layout(title="Attention from the question onto the passage", height=height, margin=MARGIN,
                      hovermode="closest")
    if x == "n":
        fig.update_xaxes(common.log_axis(xs, counts=True), title_text="sequence length n (log)")
    else:
        fig.update_xaxes(type="linear", title_text="distance: tokens between passage and question")
    means = [text.mean(name) for name in text.mass] + [np.asarray(text.uniform)]
    fig.update_yaxes(_y_axis(means, log_y), title_text="mass on the passage" + (" (log)" if log_y else ""))
    return common.legend_below(fig)


def remedy_chart(without: dict[str, tuple], with_: dict[str, tuple], remedy: str, x_title: str, y_title: str,
                 theory: dict[str, tuple] | None = None, log_y: bool = False, height: int = 440) -> go.Figure:
    """The same curves without (solid) and with a remedy (dashed), one colour per curve.

    without, with_: name -> (x, y), as needle_lines, text_lines and curve_lines
    give them; theory: name -> (x, y), drawn thin grey.
    """
    fig = go.Figure()
    for name, colour in colours.series_colours(colours.dense_last(dict.fromkeys([*without, *with_]))).items():
        for lines, dash, tag in ((without, "solid", "without"), (with_, "dash", remedy)):
            if name in lines:
                _line(fig, f"{colours.title_of(name)}, {tag}", *lines[name], colour, dash, group=name)
    for i, (name, (x, y)) in enumerate((theory or {}).items()):
        _theory_lines(fig, x, {name: y}, THEORY_DASHES[i % len(THEORY_DASHES)])
    fig.update_layout(title=f"Without and with {remedy}", height=height, margin=MARGIN)
    xs = [np.ravel(x) for x, _ in [*without.values(), *with_.values()]]
    fig.update_xaxes(common.log_axis(np.concatenate(xs), counts=True), title_text=x_title)
    ys = [y for _, y in [*without.values(), *with_.values(), *(theory or {}).values()]]
    fig.update_yaxes(_y_axis(ys, log_y), title_text=y_title + (" (log)" if log_y else ""))
    return common.legend_below(fig)


def needle_lines(needle: Needle) -> dict[str, tuple]:
    """name -> (n, head-mean needle weight), for remedy_chart."""
    return {name: (np.asarray(needle.lengths), w.mean(1)) for name, w in needle.weight.items()}


def text_lines(text: TextNeedle) -> dict[str, tuple]:
    """name -> (n, mean mass on the passage), for remedy_chart."""
    return {name: (np.asarray(text.lengths), text.mean(name)) for name in text.mass}


def curve_lines(curves: Curves, metric: str) -> dict[str, tuple]:
    """name -> (prefix length, median of the metric), for remedy_chart."""
    return {name: (np.asarray(curves.lengths), bands[metric][:, 1]) for name, bands in curves.bands.items()}


def reference_chart(lengths, specs: dict[str, remedies.Spec], log_y: bool = True, height: int = 400) -> go.Figure:
    """Nakanishi's reference setup (one logit +3, every other -2): the closed-form weight on the +3 key
    against n, one line per remedy (label -> spec; a None spec is plain softmax, drawn neutral)."""
    x = np.asarray(lengths)
    fig = go.Figure()
    palette = colours.series_colours([label for label, spec in specs.items() if spec is not None])
    for label, spec in specs.items():
        colour = palette.get(label, colours.NEUTRAL)
        fig.add_trace(go.Scatter(x=x, y=remedies.reference_weight(x, spec), name=label, mode="lines",
                                 line={"color": colour, "width": 2},
                                 hovertemplate=label + "<br>n %{x}<br>weight %{y:.4g}<extra></extra>"))
    fig.update_layout(title="Reference: one logit +3 among n - 1 at -2 (closed form)", height=height,
                      margin=MARGIN)
    fig.update_xaxes(common.log_axis(x, counts=True), title_text="number of keys n (log)")
    weights = [remedies.reference_weight(x, spec) for spec in specs.values()]
    fig.update_yaxes(_y_axis(weights, log_y), title_text="weight on the +3 key" + (" (log)" if log_y else ""))
    return common.legend_below(fig)
