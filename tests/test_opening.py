"""The first picture of a fresh server (ui.opening): saved by the first visit that draws the default
map exact with its default settings, drawn for a later start's first visitor equal to that live map,
and never for other model files, a link, another page or a damaged file."""
import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import APP, TIMEOUT
from deploy import prepare
from explorer.core import bundled
from ui import document, opening, saved
from ui.cache import store


@pytest.fixture
def restarted(monkeypatch, tmp_path):
    """A server as it starts: nothing in memory, nothing drawn yet, tables saved in tmp_path."""
    monkeypatch.setenv("EXPLORER_SAVED_DIR", str(tmp_path))
    store().clear()
    opening._drawn_live.clear()
    yield tmp_path
    store().clear()
    opening._drawn_live.clear()


def _heatmap_z(spec: str) -> list:
    return next(trace["z"] for trace in json.loads(spec)["data"] if trace["type"] == "heatmap")


def _show_script():
    from ui import opening

    opening.show(opening.PAGE)


def test_saved_once_drawn_with_defaults_then_shown_at_a_restart_equal_to_the_live_map(restarted):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"], at.query_params["grid"] = "true", "80"  # a link's map settings: not the opening map
    at = prepare.exact(at.run())
    assert not at.exception and document.ENCODED in at.session_state and not opening.is_saved()
    at = prepare.first_visit(TIMEOUT)  # a plain first visit, as the image build makes it
    assert not at.exception and opening.is_saved()
    live = _heatmap_z(at.get("plotly_chart")[0].proto.spec)

    store().clear()  # a later start of the server: nothing in memory, the picture on disk
    opening._drawn_live.clear()
    early = AppTest.from_function(_show_script, default_timeout=TIMEOUT).run()
    assert not early.exception
    assert early.title[0].value == opening.PAGE and "Layer " in early.info[0].value
    assert _heatmap_z(early.get("plotly_chart")[0].proto.spec) == live
    assert ("encoding", at.session_state["encoded"]) not in store()  # drawn before anything was encoded


def test_nothing_is_shown_for_other_model_files_a_link_another_page_or_a_damaged_file(restarted, monkeypatch):
    name = opening._name()
    saved.Saved.from_env().put(name, pd.DataFrame({"title": ["Layer 0, head 0"], "figure": ["{}"]}))
    assert len(AppTest.from_function(_show_script, default_timeout=TIMEOUT).run().get("plotly_chart")) == 1
    linked = AppTest.from_function(_show_script, default_timeout=TIMEOUT)
    linked.query_params["layer"] = "3"
    assert not linked.run().get("plotly_chart")

    def other_page():
        from ui import opening

        opening.show("Compare")

    assert not AppTest.from_function(other_page, default_timeout=TIMEOUT).run().get("plotly_chart")
    saved.Saved.from_env().put(name, pd.DataFrame({"title": ["Layer 0, head 0"], "figure": ["{not json"]}))
    damaged = AppTest.from_function(_show_script, default_timeout=TIMEOUT).run()
    assert not damaged.exception and not damaged.get("plotly_chart") and not damaged.title
    monkeypatch.setattr(bundled, "files_key", lambda model: "reinstalled")
    assert opening._name() != name
    assert not AppTest.from_function(_show_script, default_timeout=TIMEOUT).run().get("plotly_chart")


def test_files_key_follows_a_bundled_models_files(monkeypatch, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    monkeypatch.setattr(bundled, "_bundled_folder", lambda model: tmp_path)
    before = bundled.files_key("minilm")
    assert before == bundled.files_key("minilm")
    (tmp_path / "model.safetensors").write_bytes(b"\1" * 65)
    assert bundled.files_key("minilm") != before
    assert bundled.files_key("no-such/model") is None
