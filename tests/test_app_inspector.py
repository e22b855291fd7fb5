"""AppTest of the token inspector and of the messages a newcomer met: what the tables list is checked
against the model's own attention rows and columns (explorer.model_attention), computed here."""
import json

import numpy as np
import pytest
import torch
from conftest import APP, KEEPER, TIMEOUT, capture_configs, encode_in_app, said, save_checkpoint
from streamlit.testing.v1 import AppTest

import explorer
import explorer.core.device as device
import explorer.core.encoding as encoding
from explorer.core.attention import model_attention

TEXT = KEEPER * 3  # about 110 tokens for MiniLM


def _table(at, column: str) -> tuple[list[int], np.ndarray]:
    frame = at.dataframe[-1].value
    return frame["position"].tolist(), frame[column].to_numpy()


def _opened(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"source": '"Paste"', **params})
    return at.run()


def test_the_top_keys_are_the_largest_weights_of_the_models_row(app):
    at = encode_in_app(app, source="Paste", text=TEXT)
    at.number_input(key="query").set_value(17).run()
    assert not at.exception
    row = model_attention(explorer.encode(TEXT), torch.tensor([17]))[at.session_state["head"], 0]
    positions, weights = _table(at, "weight")
    assert positions == torch.topk(row, 10).indices.tolist()
    np.testing.assert_allclose(weights, row[positions].numpy(), rtol=1e-4)


def test_several_tokens_read_together_are_their_rows_summed(app):
    at = encode_in_app(app, source="Paste", text=TEXT)
    at.session_state["selection"] = "5-7,40"
    at.session_state["query"] = 5
    at.run()
    assert not at.exception
    assert "4 tokens selected (2 stretches from token 5 to 40)" in said(at.caption)
    rows = model_attention(explorer.encode(TEXT), torch.tensor([5, 6, 7, 40]))[at.session_state["head"]].sum(0)
    positions, summed = _table(at, "summed")
    assert positions == torch.topk(rows, 10).indices.tolist()
    np.testing.assert_allclose(summed, rows[positions].numpy(), rtol=1e-4)
    np.testing.assert_allclose(_table(at, "mean")[1], rows[positions].numpy() / 4, rtol=1e-4)
    at.button(key="clear_selection").click().run()
    assert at.session_state["selection"] == "" and at.session_state["query"] == 5
    at.session_state["selection"] = "60-70"
    at = encode_in_app(at, source="Paste", text="A second, shorter text: ten or so tokens.")  # what comes next
    assert not at.exception
    assert at.session_state["selection"] == "" and at.session_state["query"] == 1  # its first content token


def test_only_the_dense_page_offers_to_select_every_match(app):
    """A mechanism page reads no selection: its search steps through matches but offers no All."""
    at = encode_in_app(app, source="Paste", text=TEXT)
    at.text_input(key="find").set_value("key").run()
    assert not at.exception and any(b.key == "find_all" for b in at.button)
    at.switch_page("views/segmented.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(b.key == "find_next" for b in at.button) and not any(b.key == "find_all" for b in at.button)
    assert "Click a token to follow it." in said(at.caption) and "read several together" not in said(at.caption)


def test_who_attends_to_a_token_is_its_column(app):
    at = encode_in_app(app, source="Paste", text=TEXT)
    at.radio(key="follow").set_value("column").run()
    at.number_input(key="query").set_value(30).run()
    assert not at.exception
    doc = explorer.encode(TEXT)
    column = model_attention(doc, torch.arange(doc.n))[at.session_state["head"], :, 30]
    positions, got = _table(at, "weight")
    assert positions == torch.topk(column, 10).indices.tolist()
    np.testing.assert_allclose(got, column[positions].numpy(), rtol=1e-4)


def test_a_causal_model_opens_on_its_last_word_and_lists_only_keys_it_sees(app, tmp_path):
    from test_app_model_rules import _tokenizer

    path = save_checkpoint(capture_configs()["llama"], tmp_path, _tokenizer())
    app.sidebar.text_input(key="model_other").input(path).run()
    at = encode_in_app(app, source="Paste", text=TEXT)
    assert not at.exception
    doc = explorer.encode(TEXT, path)
    last_word = max(i for i, (a, b) in enumerate(doc.offsets) if TEXT[a:b].strip(".,").isalpha())
    assert at.session_state["query"] == last_word  # a token with the whole text before it to look at
    at.number_input(key="query").set_value(3).run()
    positions, weights = _table(at, "weight")
    assert sorted(positions) == [0, 1, 2, 3]  # the four keys token 3 sees, none after it
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-4)


def test_a_text_too_large_for_memory_offers_its_first_tokens(app, monkeypatch):
    """The machine's free memory is set small (the refusal is the same on a big text): every layer at once
    does not fit, so the chosen layer is encoded alone, saying so; then not even that, and the first tokens
    that fit are offered."""
    lm = encoding.load_model("minilm")
    per_token = 3 * lm.heads * lm.head_dim * 4
    monkeypatch.setattr(device, "free_bytes", lambda _: int(per_token * 1000 / 0.6))  # 1,000 tokens of one layer
    monkeypatch.setattr(encoding, "free_bytes", device.free_bytes)
    at = encode_in_app(app, source="Paste", text=KEEPER * 20)  # about 720 tokens: one layer fits, six do not
    assert not at.exception and "encoded" in at.session_state
    assert "No layer and head picked: the queries, keys and values of 6 layer(s)" in said(at.sidebar.caption)
    long = KEEPER * 40
    at = encode_in_app(at, source="Paste", text=long)  # about 1,440 tokens: not even one layer
    message = said(at.sidebar.error)
    assert "needs about" in message and "more than the 60% of the" in message and "GiB free that it may take" in message
    at.sidebar.button(key="use_first_tokens").click().run()
    assert not at.exception
    kept = at.session_state["encoded"].text
    assert kept != long and long.startswith(kept)
    assert any(" tokens · " in c.value and 900 < int(c.value.split(" tokens")[0].replace(",", "")) <= 1000
               for c in at.sidebar.caption)


def test_a_text_the_vocabulary_lacks_is_said_to_be_unknown(app):
    at = encode_in_app(app, source="Paste", text="🦀🐍🔭 " * 50)
    assert not at.exception
    assert "are unknown to the model's vocabulary ([UNK])" in said(at.sidebar.warning) + said(at.warning)


def test_a_links_model_that_names_no_model_is_refused_as_it_is_read(tmp_path):
    for name, says in ((str(tmp_path), "holds neither a config.json nor a .gguf file"),
                       (str(tmp_path / "nothing" / "here"), "is neither a bundled model (minilm, smollm2)")):
        at = _opened({"model": json.dumps(name), "run": "true"})
        assert not at.exception
        assert f"model: {'folder' if says.startswith('holds') else 'model'} '{name}' {says}" in said(at.warning)
        assert at.session_state["model"] == "minilm"  # nothing is loaded for it


@pytest.mark.parametrize("value", ['"5-2"', '"a,b"', '"0-20000"'])
def test_a_bad_selection_in_a_link_is_refused_and_named(value):
    at = _opened({"selection": value, "run": "false"})
    assert not at.exception
    assert "selection:" in said(at.warning)
