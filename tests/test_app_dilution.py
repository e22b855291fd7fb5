"""AppTest of the score-dilution page: prefixes, the reference setup, a passage and a question of the
needle report, the planted needle against its exact theory, attention sinks, and a remedy on all."""
import conftest
import numpy as np
from conftest import SHORT_SAMPLE, figure, values

from explorer.analysis import dilution, remedies, sinks

PAGE = "views/dilution.py"
REPORT = "Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station"


def open_page(app, **encode):
    at = conftest.open_page(app, PAGE, **encode)
    assert not at.exception, at.exception
    return at


def charts(at) -> dict:
    """Chart key (what the page named it) -> its figure."""
    return {c.proto.id.split("-", 2)[-1]: figure(c) for c in at.get("plotly_chart")}  # "$$ID-<hash>-<key>"


def traces(fig) -> dict:
    return {t.get("name"): t for t in fig["data"]}


def test_every_section_on_a_sample(app):
    at = open_page(app, sample=SHORT_SAMPLE)
    assert at.title[0].value == "Score dilution" and not at.error
    assert at.multiselect(key="dilution_mechs").value == ["segmented", "lowrank", "sinks"]
    drawn = charts(at)
    for metric in dilution.METRICS:
        assert "Dense attention" in traces(drawn[f"dilution_chart_{metric}"])
    reference = traces(drawn["dilution_reference"])
    x = values(reference["plain softmax"]["x"])
    np.testing.assert_allclose(values(reference["plain softmax"]["y"]), 1 / (1 + (x - 1) * np.exp(-5.0)), rtol=1e-9)
    np.testing.assert_allclose(values(reference["SSMax, s = 1"]["y"]), remedies.reference_weight(x, ("ssmax", {"s": 1.0})))
    needle = traces(drawn["dilution_chart_needle"])
    assert "theory, noise 1 (exact expectation)" in needle and "Sink + window (StreamingLLM)" in needle
    sink_chart = drawn["dilution_sinks"]
    assert len(values(sink_chart["data"][0]["y"])) == 12 and "of heads above 0.3" in sink_chart["layout"]["title"]["text"]
    share = sink_chart["layout"]["title"]["text"].split(": ")[1].split(" of heads")[0]  # the title, caption and verdict agree
    assert any(f"{share} of this layer's 12 heads have a sink" in c.value for c in at.caption)
    said = conftest.said(at.markdown)
    assert ("No head here scores above 0.3 on the first token" in said) == (share == "0%")
    assert {"map_Dense", "map_Sink + window (StreamingLLM)"} <= set(drawn)
    assert any("Mark a passage" in i.value for i in at.info)  # no passage in this text until one is marked


def test_a_remedy_draws_every_curve_without_and_with_it(app):
    at = open_page(app, source="Paste", text="A few words about keys and doors, then more words. " * 12)
    at.radio(key="remedy").set_value("ssmax").run()
    assert not at.exception and not at.error
    drawn = charts(at)
    curve = traces(drawn["dilution_remedy_max_weight"])
    assert curve["Dense attention, without"]["line"]["dash"] == "solid"
    assert curve["Dense attention, Length-scaled softmax (SSMax)"]["line"]["dash"] == "dash"
    needle = traces(drawn["dilution_needle_remedy"])
    plain = values(needle["Dense attention, without"]["y"])
    scaled = values(needle["Dense attention, Length-scaled softmax (SSMax)"]["y"])
    assert scaled[-1] > plain[-1]  # at the longest n SSMax keeps more on the needle
    at.number_input(key="p.ssmax.s").set_value(0.5).run()
    assert not at.exception and "(SSMax) (s 0.5)" in " ".join(traces(charts(at)["dilution_reference"]))


def test_the_needle_report_pulls_its_passage_and_question_apart(app):
    at = open_page(app, sample=REPORT)
    assert at.text_input(key="dilution_passage").value.startswith("Access code for the cold archive")
    drawn = charts(at)
    dense = traces(drawn["dilution_text"])["Dense attention"]
    mass = values(dense["y"])
    assert mass[0] > 5 * mass[-1]  # next to the question the passage gets far more than at the far end
    assert any(b.key == "dilution_csv_text" for b in at.get("download_button"))


def test_tiny_pasted_text_and_dense_only(app):
    at = open_page(app, source="Paste", text="Short <i>text</i>.")
    assert not at.error
    at.multiselect(key="dilution_mechs").set_value([]).run()
    at.radio(key="dilution_sample").set_value("last").run()
    at.number_input(key="dilution_queries").set_value(2).run()
    assert not at.exception and not at.error
    assert list(traces(charts(at)["dilution_chart_entropy"]))[:2] == ["Dense attention 25-75%", "Dense attention"]


def test_a_parameter_error_is_shown_not_raised(app):
    at = open_page(app, source="Paste", text="Short <i>text</i> for a relative-position check.")
    at.multiselect(key="dilution_mechs").set_value(["relpos"]).run()
    at.number_input(key="p.relpos.num_buckets").set_value(8).run()
    at.number_input(key="p.relpos.max_distance").set_value(2).run()
    assert not at.exception
    assert "max_distance=2" in conftest.said(at.error)


def test_a_causal_layer_without_a_sink_gets_its_own_sentence():
    scores = np.full((1, 9, 50), 1 / 50)  # every key as likely: no head leans on the first token
    none = sinks.SinkMeasure(scores, [3])
    causal, encoder = sinks.verdict(none, causal=True), sinks.verdict(none, causal=False)
    assert "No head here scores above 0.3" in causal and "no sink in layer 3" in causal and "smollm2" not in causal
    assert "encoder" in encoder and "smollm2" in encoder
