"""AppTest of the score-dilution page: a short sample with mechanisms, a tiny pasted text, dense only."""
import conftest
from conftest import SHORT_SAMPLE

PAGE = "views/dilution.py"
CHARTS = 6  # five statistics against prefix length and the needle


def open_page(app, **encode):
    at = conftest.open_page(app, PAGE, **encode)
    assert not at.exception, at.exception
    return at


def downloads(at):
    return [b for b in at.get("download_button") if (b.key or "").startswith("dilution_csv")]


def test_sample_draws_every_chart_with_mechanisms(app):
    at = open_page(app, sample=SHORT_SAMPLE)
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


def test_tiny_pasted_text_and_dense_only(app):
    at = open_page(app, source="Paste", text="Short <i>text</i>.")
    assert len(at.get("plotly_chart")) == CHARTS and not at.error
    at.multiselect(key="dilution_mechs").set_value([]).run()
    at.radio(key="dilution_sample").set_value("last").run()
    at.number_input(key="dilution_queries").set_value(2).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == CHARTS
    assert "dense" in at.get("plotly_chart")[0].proto.spec


def test_a_parameter_error_is_shown_not_raised(app):
    at = open_page(app, source="Paste", text="Short <i>text</i> for a relative-position check.")
    at.multiselect(key="dilution_mechs").set_value(["relpos"]).run()
    at.number_input(key="p.relpos.num_buckets").set_value(8).run()
    at.number_input(key="p.relpos.max_distance").set_value(2).run()
    assert not at.exception
    assert "max_distance=2" in conftest.said(at.error)
