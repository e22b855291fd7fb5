"""AppTest of the segmented-attention page: fixed segments on a short sample, sentences on a
pasted text (escaped), and a synthetic text that has no sentences at all."""
from conftest import assert_escaped, open_page, open_sample, open_sentences

PAGE = "views/segmented.py"


def test_fixed_segments_on_a_sample(app):
    at = open_sample(app, PAGE, "Segmented attention")
    assert int(at.metric[1].value.replace(",", "")) >= 1  # segments
    assert len(at.get("plotly_chart")) >= 7  # strip, two maps, crossing x2, summaries x2, row, fidelity
    assert len(at.dataframe) >= 2  # with/without table and the fidelity summary
    at.number_input(key="p.segmented.segment_length").set_value(16).run()
    at.checkbox(key="p.segmented.summaries").check().run()
    assert not at.exception
    assert int(at.metric[1].value.replace(",", "")) >= 2


def test_sentences_on_pasted_text_escape_the_text(app):
    text = "First <b>bold</b> sentence here. Second one follows! A third? Yes.\n\nNew paragraph <i>now</i>."
    at = open_sentences(app, PAGE, "segmented_mode", text)
    assert at.metric[1].value == "5"
    assert_escaped(at, "<b>", "<i>")


def test_synthetic_text_without_structure_is_one_segment(app):
    app.sidebar.radio(key="source").set_value("Synthetic").run()
    app.sidebar.number_input(key="synth_n").set_value(300).run()
    at = open_page(app, PAGE, source="Synthetic")
    at.radio(key="segmented_mode").set_value("paragraphs").run()
    assert not at.exception
    assert at.metric[1].value == "3"  # one paragraph, split at segment_length 128
    assert any("no paragraph breaks" in i.value for i in at.info)
