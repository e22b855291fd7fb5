"""AppTest of the score-dilution page: a short sample with mechanisms, a tiny pasted text, dense only."""
from pathlib import Path

import pytest
from conftest import APP, ROOT, SHORT_SAMPLE, TIMEOUT, encode_in_app

PAGE = "views/dilution.py"
CHARTS = 6  # five statistics against prefix length and the needle


@pytest.fixture
def dilution_app(tmp_path):
    """app.py when it lists the page; until then a copy of it that adds the page to the navigation."""
    from streamlit.testing.v1 import AppTest

    source = Path(APP).read_text(encoding="utf-8")
    if PAGE in source:
        return AppTest.from_file(APP, default_timeout=TIMEOUT).run(), PAGE
    wrapper = tmp_path / "app.py"
    page = str(ROOT / PAGE)
    wrapper.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        + source.replace('"views/overview.py"', repr(str(ROOT / "views/overview.py"))).replace(
            "PAGES = {", f"PAGES = {{\"Dilution\": [st.Page({page!r}, title=\"Score dilution\")],", 1),
        encoding="utf-8")
    return AppTest.from_file(str(wrapper), default_timeout=TIMEOUT).run(), page


def open_page(dilution_app, **encode):
    at, page = dilution_app
    at = encode_in_app(at, **encode)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def downloads(at):
    return [b for b in at.get("download_button") if (b.key or "").startswith("dilution_csv")]


def test_sample_draws_every_chart_with_mechanisms(dilution_app):
    at = open_page(dilution_app, sample=SHORT_SAMPLE)
    assert at.title[0].value == "Score dilution"
    assert at.multiselect(key="dilution_mechs").value == ["segmented", "lowrank"]
    assert len(at.get("plotly_chart")) == CHARTS
    assert len(downloads(at)) == CHARTS + 1  # one per chart and the long table
    assert len(at.dataframe) == 1 and not at.error
    at.select_slider(key="dilution_longest").set_value(256).run()
    at.number_input(key="dilution_points").set_value(4).run()
    at.multiselect(key="dilution_mechs").select("lsh").run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == CHARTS
    spec = at.get("plotly_chart")[-1].proto.spec
    assert "LSH attention" in spec and "theory, noise 0" in spec and "theory, noise 1" in spec


def test_tiny_pasted_text_and_dense_only(dilution_app):
    at = open_page(dilution_app, source="Paste", text="Short <i>text</i>.")
    assert len(at.get("plotly_chart")) == CHARTS and not at.error
    at.multiselect(key="dilution_mechs").set_value([]).run()
    at.radio(key="dilution_sample").set_value("last").run()
    at.number_input(key="dilution_queries").set_value(2).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == CHARTS
    assert "dense" in at.get("plotly_chart")[0].proto.spec


def test_a_parameter_error_is_shown_not_raised(dilution_app):
    at = open_page(dilution_app, source="Paste", text="Short <i>text</i> for a relative-position check.")
    at.multiselect(key="dilution_mechs").set_value(["relpos"]).run()
    at.number_input(key="p.relpos.num_buckets").set_value(8).run()
    at.number_input(key="p.relpos.max_distance").set_value(2).run()
    assert not at.exception
    assert any("max_distance=2" in e.value for e in at.error)
