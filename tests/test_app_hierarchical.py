"""AppTest of the hierarchical-attention page: a short sample with a deeper tree, and
sentence chunks on a pasted text (escaped)."""
from conftest import assert_escaped, open_sample, open_sentences

PAGE = "views/hierarchical.py"


def test_tree_levels_and_maps_on_a_sample(app):
    at = open_sample(app, PAGE, "Hierarchical attention")
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
    at = open_sentences(app, PAGE, "hierarchical_mode", text)
    assert at.metric[1].value == "4"
    assert_escaped(at, "<b>", "<i>")
