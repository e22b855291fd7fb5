"""AppTest of the compare page, and of settings carried by the URL."""
import conftest
import numpy as np
from conftest import APP, SHORT_SAMPLE, TIMEOUT, encode_in_app
from streamlit.testing.v1 import AppTest

from explorer.core.samples import load_sample
from explorer.figures.scale import MIN_SHARE


def test_compare_shows_maps_table_and_heads(app):
    at = encode_in_app(app, sample=SHORT_SAMPLE)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    picked = at.session_state["compare_mechs"]
    assert picked
    grid = conftest.figure(at.get("plotly_chart")[0])  # every map in one figure, a colour axis per scale
    assert [t["name"] for t in grid["data"]] == ["dense", *picked]
    assert grid["data"][0]["coloraxis"] == "coloraxis" and len(at.get("plotly_chart")) >= 2
    table = at.dataframe[0].value
    assert len(table) == len(picked) and (table["top-k recall"].between(0, 1)).all()
    charts = len(at.get("plotly_chart"))
    [b for b in at.button if b.label.startswith("Compute for all")][0].click().run()
    assert not at.exception
    heads = at.get("plotly_chart")[-1].proto.spec
    assert len(at.get("plotly_chart")) == charts + 1 and '"head 11"' in heads
    at.sidebar.number_input(key="head").set_value(2).run()  # the overview is cached: it stays drawn
    assert len(at.get("plotly_chart")) == charts + 1


def test_a_link_reopens_the_same_view():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"source": '"Sample"', "sample": '"The Notched Key"', "layer": "1", "head": "5",
                            "query": "42", "zoom_q": "[10, 200]", "run": "true"})
    at.run()
    assert not at.exception
    assert at.session_state["encoded"].layer == 1
    assert at.session_state["head"] == 5 and at.session_state["zoom_q"] == (10, 200)
    assert at.query_params["head"] == ["5"] or at.query_params["head"] == "5"


def test_bad_settings_in_a_link_are_ignored_with_a_warning():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"sample": '"No such text"', "layer": '"x"', "run": "true"})
    at.run()
    assert not at.exception
    notice = " ".join(w.value for w in at.warning)
    assert "Settings not applied" in notice and "sample" in notice and "layer" in notice
    assert "encoded" not in at.session_state  # the refused sample was not replaced by another text


def test_a_signed_low_rank_map_leaves_dense_on_a_log_scale_of_its_own(app):
    """A pasted text with Low-rank among the mechanisms: Linformer's signed weights get their own red-blue
    scale, dense keeps a log range that fits it (not flat), and the caption names the scales drawn."""
    at = encode_in_app(app, source="Paste", text=load_sample(SHORT_SAMPLE))
    at.session_state["compare_mechs"] = ["lsh", "lowrank"]
    at.switch_page("views/compare.py").run()
    assert not at.exception
    fig = conftest.figure(at.get("plotly_chart")[0])
    axis_of = {t["name"]: t["coloraxis"] for t in fig["data"]}
    layout = fig["layout"]
    signed, dense = layout[axis_of["lowrank"]], layout[axis_of["dense"]]
    assert axis_of["lowrank"] != axis_of["dense"] and signed["cmin"] == -signed["cmax"] < 0
    assert "signed" in signed["colorbar"]["title"]["text"] and "log10 weight" in dense["colorbar"]["title"]["text"]
    z = conftest.values(fig["data"][0]["z"]).astype(float)
    z = z[np.isfinite(z)]
    assert len(np.unique(z)) > 10 and z.max() - z.min() >= 1.0  # dense varies over a decade or more...
    seen = np.clip(z, dense["cmin"], dense["cmax"])  # ...and over a fair part of its own colour bar
    assert np.quantile(seen, 0.99) - np.quantile(seen, 0.01) >= MIN_SHARE * (dense["cmax"] - dense["cmin"])
    caption = " ".join(c.value for c in at.caption)
    assert "Automatic: log weight." in caption and "Low-rank attention: signed" in caption
