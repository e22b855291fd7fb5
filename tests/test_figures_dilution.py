"""Figures of the dilution page's new sections: traces, their data, names, colours and axis types."""
import numpy as np
import plotly.graph_objects as go
import torch

import explorer
from explorer.analysis.dilution import dilution_curves, needle_experiment
from explorer.analysis.experiment import DENSE
from explorer.analysis.needle_text import text_dilution
from explorer.analysis.remedies import reference_weight
from explorer.analysis.sinks import SinkMeasure, sink_measure
from explorer.figures import colours
from explorer.figures.dilution import (curve_lines, needle_chart, needle_lines,
                                       reference_chart, remedy_chart, text_chart, text_lines)
from explorer.figures.sinks import OTHER, SINK, sink_chart
from explorer.mechanisms import REGISTRY

DENSED = colours.title_of(DENSE)  # what a legend says for dense
SEG = {"seg": (REGISTRY["segmented"], {"segment_length": 16})}


def text_result(remedy=None):
    d = explorer.synthetic(200, heads=2, head_dim=8, seed=1)
    offsets = [(2 * i, 2 * i + 1) for i in range(200)]
    return text_dilution(d.q, d.k, d.v, offsets, (5, 9), (190, 194), fillers=[0, 10, 100], mechanisms=SEG,
                         remedy=remedy)


def named(fig: go.Figure) -> dict:
    return {t.name: t for t in fig.data}


def test_text_chart_lines_bands_and_the_uniform_share():
    got = text_result()
    fig = text_chart(got)
    traces = named(fig)
    assert list(traces) == ["seg 25-75%", "seg", DENSED + " 25-75%", DENSED, "uniform row (keys seen)"]  # dense on top
    for name, shown in ((DENSE, DENSED), ("seg", "seg")):
        np.testing.assert_allclose(traces[shown].y, got.mean(name))
        assert list(traces[shown].x) == got.lengths
    assert traces[DENSED].line.color == colours.NEUTRAL and traces["seg"].line.color != colours.NEUTRAL
    np.testing.assert_allclose(traces["uniform row (keys seen)"].y, got.uniform)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "linear"
    by_distance = text_chart(got, x="distance", log_y=True)
    assert list(named(by_distance)[DENSED].x) == [0, 10, 100]
    assert by_distance.layout.xaxis.type == "linear" and by_distance.layout.yaxis.type == "log"


def test_remedy_chart_solid_without_dashed_with_same_colour():
    without, with_ = text_result(), text_result(("ssmax", {"s": 1.0}))
    fig = remedy_chart(text_lines(without), text_lines(with_), "SSMax", "n", "mass on the passage",
                       theory={"uniform": (np.array(without.lengths), np.array(without.uniform))})
    traces = named(fig)
    assert list(traces) == ["seg, without", "seg, SSMax", f"{DENSED}, without", f"{DENSED}, SSMax", "uniform"]
    for name, shown in ((DENSE, DENSED), ("seg", "seg")):
        plain, remedied = traces[f"{shown}, without"], traces[f"{shown}, SSMax"]
        assert plain.line.dash == "solid" and remedied.line.dash == "dash"
        assert plain.line.color == remedied.line.color and plain.legendgroup == remedied.legendgroup == name
        np.testing.assert_allclose(remedied.y, with_.mean(name))
    assert traces["uniform"].line.color == "grey"
    assert fig.layout.xaxis.type == "log" and fig.layout.title.text == "Without and with SSMax"
    assert not np.allclose(traces[f"{DENSED}, without"].y, traces[f"{DENSED}, SSMax"].y)


def test_needle_and_curve_lines_feed_the_remedy_chart():
    plain = needle_experiment([8, 64], noise=1.0, mechanisms=SEG)
    lines = needle_lines(plain)
    assert list(lines) == [DENSE, "seg"]
    np.testing.assert_allclose(lines[DENSE][1], plain.weight[DENSE].mean(1))
    d = explorer.synthetic(64, heads=1)
    curves = dilution_curves(d.q, d.k, d.v, [8, 64], SEG, queries=4)
    medians = curve_lines(curves, "entropy")
    np.testing.assert_allclose(medians["seg"][1], curves.bands["seg"]["entropy"][:, 1])
    fig = remedy_chart(medians, {}, "SSMax", "prefix length", "entropy", log_y=True)
    assert [t.name for t in fig.data] == ["seg, without", f"{DENSED}, without"] and fig.layout.yaxis.type == "log"


def test_needle_chart_breaks_the_plugin_line_where_it_is_off():
    fig = needle_chart(needle_experiment([2, 22, 4096], margin=4.0, noise=3.0))
    traces = named(fig)
    exact = traces["theory, noise 3 (exact expectation)"]
    plug = traces["plug-in e^(noise²/2), noise 3 (where within 5%)"]
    assert np.isfinite(np.asarray(exact.y, dtype=float)).all()
    assert np.isnan(np.asarray(plug.y, dtype=float)[:2]).all()


def test_reference_chart_draws_the_closed_forms():
    lengths = np.array([2, 10, 100, 10**4])
    specs = {"softmax": None, "SSMax s 1": ("ssmax", {"s": 1.0}), "Llama 4": ("llama4", {"floor_scale": 8})}
    fig = reference_chart(lengths, specs)
    traces = named(fig)
    assert list(traces) == list(specs)
    for label, spec in specs.items():
        np.testing.assert_allclose(traces[label].y, reference_weight(lengths, spec))
    assert traces["softmax"].line.color == colours.NEUTRAL and traces["SSMax s 1"].line.color != colours.NEUTRAL
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_sink_chart_bars_for_one_layer_heatmap_for_several():
    q = torch.zeros(3, 20, 1)
    q[0] = 1.0
    k = torch.zeros(3, 20, 1)
    k[0, 0] = 6.0  # head 0 sinks onto token 0
    one = sink_measure(q, k, layer=2)
    fig = sink_chart(one)
    bar = fig.data[0]
    assert isinstance(bar, go.Bar) and list(bar.x) == ["head 0", "head 1", "head 2"]
    np.testing.assert_allclose(bar.y, one.token_scores[0])
    assert list(bar.marker.color) == [SINK, OTHER, OTHER]
    assert fig.layout.shapes[0].y0 == 0.3 and "33% of heads above 0.3" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "head (layer 2)"
    many = sink_chart(SinkMeasure.merge(one, sink_measure(q, k, layer=3)))
    heat = many.data[0]
    assert isinstance(heat, go.Heatmap) and np.asarray(heat.z).shape == (2, 3)
    assert list(heat.y) == ["layer 2", "layer 3"] and heat.text[0][0] == "sink" and heat.text[1][1] == ""
