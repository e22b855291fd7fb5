"""AppTest of the hierarchical-attention page: a short sample with a deeper tree, and
sentence chunks on a pasted text (escaped)."""
from conftest import SHORT_SAMPLE, encode_in_app

PAGE = "views/hierarchical.py"


def open_page(at):
    return at.switch_page(PAGE).run()


def test_tree_levels_and_maps_on_a_sample(app):
    at = open_page(encode_in_app(app, sample=SHORT_SAMPLE))
    assert not at.exception
    assert at.title[0].value == "Hierarchical attention"
    at.number_input(key="p.hierarchical.chunk_length").set_value(8).run()
    at.selectbox(key="p.hierarchical.branching").set_value(2).run()
    assert not at.exception
    levels = int(at.metric[2].value)
    assert levels >= 3  # chunks, super-chunks, ..., document
    # tree strip, mass along the text, one map per part, query bars and row, the pair, fidelity
    assert len(at.get("plotly_chart")) >= 2 + levels + 2 + 2 + 1
    assert len(at.dataframe) == 1


def test_sentence_chunks_on_pasted_text(app):
    text = "One <b>short</b> sentence. Another one here! A third?\n\nA second paragraph <i>too</i>."
    at = open_page(encode_in_app(app, source="Paste", text=text))
    at.radio(key="hierarchical_mode").set_value("sentences").run()
    assert not at.exception
    assert at.metric[1].value == "4"
    html = "".join(h.proto.body for h in at.get("html"))
    assert "&lt;" in html and "<b>" not in html and "<i>" not in html
