"""Charts a reader can trust: axis ranges, tick formats, legend places, labels and colours,
asserted on the figure objects the builders return (no browser)."""
import math
import re

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis import dilution, relpos as relpos_analysis
from explorer.core.pooling import pooled_map
from explorer.figures import colours, common, dilution as dilution_figs, grid, lowrank, lsh, memory, relpos, routing
from explorer.figures.scale import fit_scale
from explorer.mechanisms import REGISTRY

N = 300
DOC = explorer.synthetic(N, heads=2, head_dim=8, seed=1)
TOKENS = DOC.tokens


def log_span(axis) -> tuple[float, float]:
    return tuple(axis.range)


def assert_powers_of_ten(axis):
    """Ticks one per decade (dtick 1) or at listed 1-2-5 values, labelled with powers, never plotly's
    mantissa-only "D1"/"D2" ticks."""
    assert axis.type == "log" and axis.exponentformat == "power"
    assert axis.dtick == 1 or (axis.tickmode == "array" and len(axis.tickvals) >= 1)


def assert_legend_below(fig):
    """The legend hangs from the foot of the figure, so plotly grows the margin under the x title,
    and every axis grows its own margin for ticks and title (whatever the template)."""
    legend = fig.layout.legend
    assert (legend.orientation, legend.yref, legend.y, legend.yanchor) == ("h", "container", 0, "bottom")
    axes = [getattr(fig.layout, a) for a in dir(fig.layout) if re.fullmatch(r"[xy]axis\d*", a)]
    assert axes and all(axis.automargin is True for axis in axes if axis is not None)


# ---------------------------------------------------------------- low rank


@pytest.mark.parametrize("count", [1, 384, 5000])
def test_spectrum_axes_run_from_one_to_the_last_value(count):
    values = torch.logspace(0, -6, count)
    energy = values.square().cumsum(0) / values.square().sum()
    ranks = {0.9: max(1, count // 10), 0.99: count // 2 or None}
    fig = lowrank.spectrum_chart(values, energy, ranks, chosen=min(64, count))
    top = math.log10(count)
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        lo, hi = log_span(axis)
        assert lo <= 0 < lo + 0.1 and top <= hi < top + 0.1  # 1 .. count, a sliver of room each side
        assert_powers_of_ten(axis)
        assert axis.tickformat == ",d"  # 1, 10, 100: ranks are counts
    lo, hi = log_span(fig.layout.yaxis)
    assert lo <= math.log10(float(values.min())) and hi >= 0 and hi - lo < 6.5  # the σ shown, not 10^240
    labels = [a for a in fig.layout.annotations if a.text.startswith(("90%", "99%"))]
    assert len(labels) == sum(r is not None for r in ranks.values())
    for label in labels:
        rank = ranks[0.9 if label.text.startswith("90%") else 0.99]
        assert (label.xref, label.yref) == ("x2", "y2") and label.x == pytest.approx(math.log10(rank))
        assert fig.layout.xaxis2.range[0] <= label.x <= fig.layout.xaxis2.range[1]
        assert f"{rank:,}" in label.text


def test_error_curves_name_methods_in_words_with_fixed_colours():
    errors = {"svd": [0.5, 0.1, 0.0], "nystrom": [0.6, 0.3, 0.2], "linformer": [0.9, 0.7, 0.6]}
    fig = lowrank.error_curves_chart([1, 2, 4], errors, errors, chosen=2)
    names = {t.name for t in fig.data}
    assert names == {"Linformer", "Nystromformer", "Truncated SVD (the best rank k)"}
    assert {t.line.color for t in fig.data} == set(lowrank.METHOD_COLOURS.values())
    assert_legend_below(fig)
    lo, hi = log_span(fig.layout.xaxis)
    assert lo < 0 < math.log10(4) < hi < 1


# ---------------------------------------------------------------- relative position


def measured():
    res = REGISTRY["relpos"].run(DOC.q, DOC.k, DOC.v)
    dense = REGISTRY["dense"].run(DOC.q, DOC.k, DOC.v)
    return {"dense": relpos_analysis.attention_by_distance(dense.weights, N, 2),
            "relpos": relpos_analysis.attention_by_distance(res.weights, N, 2)}


def test_relpos_legends_sit_below_the_axis_titles():
    d = torch.arange(-50, 51)
    curves = -torch.log1p(d.abs().float()).repeat(12, 1)
    decay = {"distances": d, "rope": torch.rand(1, d.numel()), "plain": torch.rand(1, d.numel()),
             "bound": torch.rand(d.numel())}
    for fig in (relpos.bias_by_distance(d, curves, highlight=3), relpos.bias_and_attention(d, curves[0], measured()),
                relpos.rope_decay(decay)):
        assert_legend_below(fig)
        assert fig.layout.margin.b >= 40  # the x title's room; the legend's is added by plotly


def test_relpos_log_axes_read_as_powers_of_ten():
    d = torch.arange(-2000, 2001)
    fig = relpos.bias_and_attention(d, -torch.log1p(d.abs().float()), measured())
    x = fig.layout.xaxis
    assert_powers_of_ten(x)
    assert x.tickformat == ",d"  # 1, 10, 100, 1,000 on the 1 + |distance| axis
    assert x.range[0] <= 0 and x.range[1] >= math.log10(2001)
    assert_powers_of_ten(fig.layout.yaxis2)
    names = [t.name for t in fig.data]
    assert {"Dense attention", "Relative position"} <= set(names)  # measured series by mechanism title
    by_name = {t.name: t for t in fig.data}
    assert by_name["Dense attention"].line.color == colours.NEUTRAL
    assert by_name["Relative position"].line.color == colours.MECHANISMS["relpos"]


def test_bias_map_names_the_bias_not_a_weight():
    bias = relpos_analysis.bias_map(DOC.q, DOC.k, grid=16)
    fig = relpos.bias_map(bias, TOKENS, title="Position term, head 0")
    heat = fig.data[0]
    assert heat.colorbar.title.text == relpos.BIAS == "bias added to the score"
    assert "bias added to the score" in heat.hovertemplate and "weight" not in heat.hovertemplate
    assert heat.zmid == 0
    log = common.pooled_heatmap(torch.rand(3, 3), TOKENS, [0, 1, 2, 3], [0, 1, 2, 3], log=True, label="mass")
    assert log.data[0].colorbar.title.text == "log10 mass"


# ---------------------------------------------------------------- several maps, one figure


def four_maps():
    maps = {}
    for key, params in (("dense", {}), ("lsh", {"n_buckets": 8}), ("lowrank", {"rank": 8}), ("segmented", {})):
        res = REGISTRY[key].run(DOC.q[:1], DOC.k[:1], DOC.v[:1], **params)
        maps[key] = pooled_map(res.weights, 1, N, grid=20)
    return maps


def test_map_grid_two_a_row_one_colour_bar_shared_range():
    maps = four_maps()
    scale = fit_scale([m.mean[0] for m in maps.values()], "mean", "log")
    fig = grid.map_grid(maps, TOKENS, scale)
    assert [t.name for t in fig.data] == list(maps)
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3"), ("x4", "y4")]
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}  # one colour bar for all
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (scale.zmin, scale.zmax)
    assert fig.layout.coloraxis.colorbar.title.text == "log10 weight"
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [REGISTRY[k].title for k in maps]
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]  # two a row
    assert fig.layout.yaxis3.domain[1] < fig.layout.yaxis.domain[0]  # the next two below
    heat = fig.data[0]
    assert list(heat.x) == common.bin_labels(TOKENS, maps["dense"].col_edges)  # categorical bins
    assert "query %{y}" in heat.hovertemplate and "key %{x}" in heat.hovertemplate
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.dragmode == "select"


def test_map_grid_hides_the_empty_cell_and_takes_any_row_width():
    maps = dict(list(four_maps().items())[:3])
    scale = fit_scale([m.mean[0] for m in maps.values()], "mean", "linear", diverging=True)
    fig = grid.map_grid(maps, TOKENS, scale)
    assert fig.layout.xaxis4.visible is False and fig.layout.yaxis4.visible is False
    assert fig.layout.xaxis3.title.text == "key position" and fig.layout.xaxis2.title.text == "key position"
    one_row = grid.map_grid(maps, TOKENS, scale, per_row=3)
    assert one_row.layout.height == grid.ROW_HEIGHT
    with pytest.raises(ValueError):
        grid.map_grid({}, TOKENS, scale)


def test_a_box_on_a_subplot_maps_back_to_its_map_and_tokens():
    maps = four_maps()
    scale = fit_scale([m.mean[0] for m in maps.values()], "mean", "log")
    fig = grid.map_grid(maps, TOKENS, scale)
    edges = maps["lowrank"].row_edges  # 20 bins of 15 tokens
    box = {"xref": "x3", "yref": "y3", "x": [2.2, 5.6], "y": [-3.0, 1.4]}
    name, rows, cols = grid.selected_window(fig, maps, box)
    assert name == "lowrank" and rows == (0, edges[2]) and cols == (edges[2], edges[7])
    assert grid.selected_window(fig, maps, {**box, "xref": "x9", "yref": "y9"}) is None
    assert grid.selected_window(fig, maps, {"xref": "x", "yref": "y", "x": [1.0, 2.0]}) is None
    assert common.box_window({"x": [40.0, 90.0], "y": [0.0, 0.0]}, edges, edges) == ((0, edges[1]), (edges[-2], N))


# ---------------------------------------------------------------- one colour per mechanism


def test_every_mechanism_has_its_own_colour_and_dense_is_neutral():
    assert set(REGISTRY) | {"sinks"} <= set(colours.MECHANISMS)
    assert len(set(colours.MECHANISMS.values())) == len(colours.MECHANISMS)
    assert not set(colours.MECHANISMS.values()) & set(colours.SERIES)
    assert colours.colour_of("dense") == colours.colour_of("Dense") == colours.colour_of("Dense attention")
    assert colours.colour_of("dense") == colours.NEUTRAL
    for key, mech in REGISTRY.items():
        assert colours.colour_of(mech.title) == colours.colour_of(key) and colours.title_of(key) == mech.title
    assert colours.colour_of("total variation") is None and colours.title_of("total variation") == "total variation"
    hues = colours.series_colours(["dense", "top-8 recall", "lsh", "reachable mass"])
    assert hues == {"dense": colours.NEUTRAL, "top-8 recall": colours.SERIES[0], "lsh": colours.MECHANISMS["lsh"],
                    "reachable mass": colours.SERIES[1]}


def test_along_text_legends_show_titles_in_mechanism_colours():
    fig = common.along_text({"dense": torch.rand(N), "lsh": torch.rand(N)}, TOKENS, points=50)
    lines = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in lines] == ["Dense attention", REGISTRY["lsh"].title]
    assert [t.line.color for t in lines] == [colours.NEUTRAL, colours.MECHANISMS["lsh"]]
    assert_legend_below(fig)


def test_caught_and_missed_differ_in_hue_and_shape_not_red_against_green():
    rows = torch.arange(10)
    top = torch.randint(0, N, (10, 4))
    hit = torch.rand(10, 4) > 0.5
    fig = lsh.caught_pairs(rows, top, hit, TOKENS)
    caught, missed = fig.data
    assert (caught.marker.color, missed.marker.color) == (colours.CAUGHT, colours.MISSED)
    assert caught.marker.symbol != missed.marker.symbol
    assert {"#2ca02c", "#d62728"}.isdisjoint({caught.marker.color, missed.marker.color})


def test_dilution_charts_draw_dense_neutral_and_name_mechanisms_by_title():
    title = REGISTRY["segmented"].title
    mechs = {title: (REGISTRY["segmented"], {"segment_length": 16})}
    curves = dilution.dilution_curves(DOC.q, DOC.k, DOC.v, [16, 64, 256], mechs, queries=16)
    fig = dilution_figs.band_chart(curves, "entropy", log_y=True)
    lines = {t.name: t for t in fig.data if t.showlegend is not False}
    assert lines["Dense attention"].line.color == colours.NEUTRAL
    assert lines[title].line.color == colours.MECHANISMS["segmented"]
    assert_legend_below(fig)
    assert_powers_of_ten(fig.layout.yaxis) and fig.layout.xaxis.tickformat == ",d"
    needle = dilution.needle_experiment([16, 64, 256], mechanisms=mechs)
    assert {t.name for t in dilution_figs.needle_chart(needle).data} >= {"Dense attention", title}


def test_routing_paths_take_mechanism_titles_and_colours():
    names = ["local", "lsh", "dense"]
    fig = routing.route_per_token(torch.rand(N, 3).softmax(-1), names, TOKENS, 0, 20)
    assert [t.name for t in fig.data] == ["local", REGISTRY["lsh"].title, "Dense attention"]
    assert [t.marker.color for t in fig.data] == [colours.SERIES[0], colours.MECHANISMS["lsh"], colours.NEUTRAL]
    usage = routing.path_usage(torch.tensor([0.2, 0.5, 0.3]), names, {n: 1.0 for n in names}, 2.0)
    assert list(usage.data[0].y) == ["local", REGISTRY["lsh"].title, "Dense attention"]


# ---------------------------------------------------------------- words, not code names


CODE_NAME = re.compile(r"\b[a-z]+_[a-z_]+\b")  # pinv_iters, reach_mass, worst_decile, ...
KEYS = {"lsh", "lowrank", "relpos"}  # registry keys that are no word ("memory" is one, on the memory chart)


def texts(fig) -> list[str]:
    """Every string a reader can see on a figure: titles, axis titles, trace names, hovers, notes."""
    layout = fig.layout
    out = [layout.title.text or ""]
    out += [a.text or "" for a in layout.annotations]
    out += [getattr(layout, ax).title.text or "" for ax in dir(layout) if re.fullmatch(r"[xy]axis\d*", ax)
            and getattr(layout, ax) is not None]
    for t in fig.data:
        out += [t.name or "", getattr(t, "hovertemplate", None) or ""]
        text = getattr(t, "text", None)
        out += [text] if isinstance(text, str) else []
    return [re.sub(r"%\{[^}]*\}", "", s) for s in out]  # plotly's own %{customdata} placeholders


def every_figure():
    res = REGISTRY["lsh"].run(DOC.q, DOC.k, DOC.v, n_buckets=8)
    s = res.structure
    mem = REGISTRY["memory"].run(DOC.q, DOC.k, DOC.v, segment=64, memory=32, compressed=4)
    values = torch.logspace(0, -3, 50)
    d = torch.arange(-20, 21)
    yield lowrank.spectrum_chart(values, values.cumsum(0) / values.sum(), {0.9: 5, 0.99: 20}, chosen=8)
    yield lowrank.error_curves_chart([1, 2], {"svd": [0.5, 0.1]}, {"svd": [0.5, 0.1]})
    yield lowrank.weight_rows(torch.rand(N), torch.rand(N), TOKENS, "Nystromformer", 3)
    yield relpos.bias_by_distance(d, torch.rand(2, d.numel()), highlight=0)
    yield relpos.bias_and_attention(d, torch.rand(d.numel()), measured())
    yield lsh.bucket_sizes(s.bucket_sizes[0, 0], s.key_bucket_sizes[0, 0])
    yield lsh.caught_by_rank(torch.rand(10, 4) > 0.5)
    yield lsh.seed_spread({"seed": [0, 1], "recall": torch.tensor([0.2, 0.3]), "reach_mass": torch.tensor([0.1, 0.4])})
    yield memory.segment_timeline(mem.structure, TOKENS)
    yield routing.loss_curve([1.0, 0.5, 0.25], 1.0)
    yield common.along_text({"dense": torch.rand(N), "lowrank": torch.rand(N)}, TOKENS)


def test_no_figure_shows_a_code_name():
    for fig in every_figure():
        for text in texts(fig):
            assert not CODE_NAME.search(text), text
        assert not {t.name for t in fig.data} & KEYS, [t.name for t in fig.data]


def test_log_axis_fits_values_and_never_shows_bare_mantissas():
    wide = common.log_axis([1e-6, 1e-3, 0.5])
    assert wide["dtick"] == 1 and wide["range"][0] < -6 < 0 < wide["range"][1] + 1
    narrow = common.log_axis([3.0, 40.0], counts=True)  # 1-2-5 steps inside 3 .. 40
    assert narrow["tickmode"] == "array" and narrow["tickformat"] == ",d"
    assert np.allclose(narrow["tickvals"], [5, 10, 20])
    lo, hi = common.log_axis([0.0, -1.0, float("nan")])["range"]  # nothing positive: still a valid axis
    assert lo < hi
