"""AppTest of the dense-attention page: a sample, a pasted text, an empty text."""
import re

import pytest
import conftest
import explorer
from conftest import SHORT_SAMPLE, encode_in_app


def test_sample_draws_map_curves_and_inspector(app):
    at = encode_in_app(app, sample=SHORT_SAMPLE)
    assert not at.exception
    assert "encoded" in at.session_state
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # attention map, entropy, max weight
    assert at.metric[0].value != "—"
    assert len(at.dataframe) == 1  # top-k keys of the inspected query


def test_pasted_text_and_head_change_keep_the_encoding(app):
    at = encode_in_app(app, source="Paste", text="Attention is all you need. <b>Bold?</b> Maybe not.")
    assert not at.exception
    doc_args = at.session_state["encoded"]
    assert doc_args.text.startswith("Attention")
    at.sidebar.number_input(key="head").set_value(3).run()
    assert not at.exception
    assert at.session_state["encoded"] == doc_args
    conftest.assert_escaped(at, "<b>")  # user text is escaped, token by token


def test_empty_text_warns_and_encodes_nothing(app):
    at = encode_in_app(app, source="Paste", text="   ")
    assert not at.exception
    assert "encoded" not in at.session_state
    assert any("empty" in w.value for w in at.warning)


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "../../etc/passwd"])
def test_bad_model_shows_our_sentence_not_a_traceback(app, name):
    at = app
    at.sidebar.text_input(key="model_other").input(name).run()
    assert at.sidebar.selectbox(key="model").value == name
    at.sidebar.button[0].click().run()
    assert not at.exception
    said = conftest.said(at.error)
    assert any(f"model '{name}' {what}" in said for what in ("is a file", "is neither a bundled model")) \
        or f"could not load model '{name}'" in said  # which, depends on what the path names where the tests run
    assert "or type another under “Another model: a Hugging Face id or a local folder”" in said
    assert "repo_type" not in said and "repo_id" not in said  # not the hub library's arguments


def test_a_first_visit_shows_the_default_sample_without_a_click():
    from conftest import APP, TIMEOUT
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()  # no link settings: a person's first visit
    assert not at.exception
    assert at.session_state["encoded"].text.startswith("# A Field Guide to Reading Long Documents")
    assert any(c.proto.id for c in at.get("plotly_chart"))  # the map and curves are drawn
    assert "attention behaves on long text" in at.markdown[0].value
    assert conftest.tokens(at) > 20_000


def test_the_inspector_starts_on_content_and_steps_through_a_words_matches(app):
    at = encode_in_app(app, source="Paste", text="# Keys\n\nThe key opens the door; a second key opens the cellar.")
    assert not at.exception
    assert at.session_state["query"] == 2  # [CLS], "#", then "keys": the first token with content
    at.text_input(key="find").input("key").run()
    assert "Match 1 of 3: token 2." in conftest.said(at.caption)
    at.button(key="find_next").click().run()
    at.button(key="find_next").click().run()
    third = int(re.search(r"Match 3 of 3: token (\d+)\.", conftest.said(at.caption)).group(1))
    assert at.number_input(key="query").value == at.session_state["query"] == third  # one query, one truth
    focus = re.search(r'<span data-i="(\d+)" class="focus"[^>]*>([^<]*)<', conftest.page_html(at))
    assert (int(focus.group(1)), focus.group(2)) == (third, "key")  # the inspector follows the third match
    at.button(key="find_back").click().run()
    assert "Match 2 of 3" in conftest.said(at.caption) and at.number_input(key="query").value < third
    at.number_input(key="query").set_value(third + 1).run()  # typed: the search no longer names the token
    assert "3 matches; ◀ ▶ step from token" in conftest.said(at.caption)
    assert at.session_state["query"] == third + 1


def test_a_phrase_a_line_and_a_character_offset_are_found(app):
    text = "First line here.\nThe Corresponding  Source is what counts.\nLast line."
    at = encode_in_app(app, source="Paste", text=text)
    doc = explorer.encode(text)
    for typed, where in (("corresponding source", text.index("Corresponding")), ("line:3", text.index("Last")),
                         ("char:5", 5)):
        at.text_input(key="find").input(typed).run()
        assert not at.exception
        token = at.session_state["query"]
        a, b = doc.offsets[token]
        assert a <= where < b or (typed == "char:5" and a > where), (typed, token, doc.offsets[token])


def test_a_long_text_on_minilm_opens_on_the_head_where_content_dominates(app):
    from explorer.analysis import windows
    from explorer.core.samples import load_sample

    at = encode_in_app(app, sample=conftest.SHORT_SAMPLE)  # 2,709 tokens: six windows of MiniLM
    assert not at.exception
    capture = explorer.encode_layers(load_sample(conftest.SHORT_SAMPLE))
    layer, head, why = windows.default_layer_head(windows.content_heads(capture))
    assert (at.session_state["layer"], at.session_state["head"]) == (layer, head) != (0, 0)
    assert any(c.value.startswith("Opened here because positions restart") for c in at.caption)


def test_the_text_is_hashed_once_per_encoding_not_per_rerun(app, monkeypatch):
    """Reruns (a head changed, a page switched) find the encoding by its key: no hash of the text."""
    import ui.texts

    hashed = []
    real = ui.texts.content_key
    monkeypatch.setattr(ui.texts, "content_key", lambda text: hashed.append(len(text)) or real(text))
    import ui.state

    monkeypatch.setattr(ui.state, "content_key", ui.texts.content_key)
    text = "Attention is all you need. " * 40
    at = encode_in_app(app, source="Paste", text=text)
    assert not at.exception and hashed == [len(text)]  # once, when Run encoded it
    at.sidebar.number_input(key="head").set_value(3).run()
    at.switch_page("views/model.py").run()
    at.switch_page("views/overview.py").run()
    assert not at.exception and hashed == [len(text)]


def test_a_zoom_on_one_text_does_not_crop_the_next(app):
    """Zoomed into a short text, then Run on a longer one: the new text opens whole."""
    at = encode_in_app(app, source="Paste", text="A short text about rivers and towns. " * 20)
    short = conftest.tokens(at)
    at.session_state["zoom_q"] = at.session_state["zoom_k"] = (0, short // 2)  # what a dragged box leaves
    at.run()
    at = encode_in_app(at, source="Sample", sample=conftest.SHORT_SAMPLE)
    assert not at.exception
    n = conftest.tokens(at)
    assert n > short and at.session_state["zoom_q"] == at.session_state["zoom_k"] == (0, n)
    assert not any("lies beyond" in c.value for c in at.caption)


def test_an_empty_run_after_a_text_says_the_page_still_shows_that_text(app):
    at = encode_in_app(app, source="Paste", text="Rivers carry silt to the sea. <i>Towns</i> grow at their mouths.")
    at = encode_in_app(at, source="Paste", text="   ")
    assert not at.exception
    shown = conftest.said(at.warning)
    assert "Still showing the previous text" in shown and "the text in the sidebar is empty" in shown
    assert "Rivers carry silt" in shown and "<i>" in shown  # named in its own words, escaped as text
    at = encode_in_app(at, source="Paste", text="A new text altogether.")
    assert not any("Still showing" in w.value for w in at.warning)


def test_a_second_pasted_text_is_the_one_encoded(app):
    """After a pasted text is stored for its link, the next paste is not replaced by the stored one."""
    at = encode_in_app(app, source="Paste", text="The first text, about tides and harbours.")
    first = at.session_state["encoded"].text_key
    at.sidebar.text_area(key="pasted").input("A second text, about mountains and the passes between them.").run()
    at.sidebar.button[0].click().run()  # as a person does: type the next text, press Run
    assert not at.exception
    assert at.session_state["pasted"].startswith("A second text")
    assert at.session_state["encoded"].text.startswith("A second text") and at.session_state["encoded"].text_key != first
