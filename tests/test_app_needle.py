"""AppTest of the Needle page on SmolLM2 (real weights) over a pasted text: the curve equals the
library's probe, dense and a sink + window with its window edge; the retrieval grid and top heads; a
click on a head opening the Dense attention page on the prompt at the answer's first token, in that
layer and head, the fact selected; the Model view's retrieval column; an encoder refused with a switch
to SmolLM2; bad inputs said in words with the page still usable."""
import conftest
import numpy as np
import pytest
from conftest import figure, said, values

import explorer
from explorer.analysis import needle_probe as npb
from explorer.core.samples import load_sample
from ui.texts import content_key

PAGE = "views/needle.py"
TEXT = load_sample("A Field Guide to Reading Long Documents")[:2400]  # about 480 tokens
SETUP = {"needle_tokens": 192, "needle_points": 2, "needle_mechs": ["sinks"], "p.sinks.sinks": 4,
         "p.sinks.window": 48}


def _needle(app, model: str = "smollm2"):
    at = app
    at.sidebar.checkbox(key="auto_head").uncheck().run()
    at.sidebar.selectbox(key="model").set_value(model).run()
    for key, value in SETUP.items():
        at.session_state[key] = value
    return conftest.open_page(at, PAGE, source="Paste", text=TEXT)


@pytest.fixture(scope="module")
def probed():
    """The library's own probes of the same setup: what the page must show."""
    args = dict(positions=(0.0, 1.0), max_tokens=192)
    return (explorer.needle_probe(TEXT, **args),
            explorer.needle_probe(TEXT, **args, mechanism="sinks", params={"sinks": 4, "window": 48}))


def test_the_curve_the_heads_and_a_click_that_opens_the_dense_page(app, probed):
    at = _needle(app)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Needle"
    dense, window = probed
    curve = figure(at.get("plotly_chart")[0])
    lines = {t["name"]: t for t in curve["data"]}
    np.testing.assert_allclose(values(lines["Dense attention"]["y"]), dense.answer_prob, rtol=1e-4)
    np.testing.assert_allclose(values(lines["Sink + window (StreamingLLM)"]["y"]), window.answer_prob, rtol=1e-4,
                               atol=1e-9)
    edge = [s for s in curve["layout"]["shapes"] if s["line"]["dash"] == "dot"]
    assert len(edge) == 1 and edge[0]["x0"] == pytest.approx(window.window_edge * 100)
    grid = figure(at.get("plotly_chart")[1])["data"][0]
    np.testing.assert_allclose(values(grid["marker"]["color"]), dense.retrieval.mean(0).reshape(-1), atol=1e-9)
    top = at.dataframe[0].value
    assert len(top) == 10 and top.retrieval.iloc[0] == pytest.approx(dense.retrieval.mean(0).max())
    layer, head = int(top.layer.iloc[0]), int(top["head"].iloc[0])

    at.number_input(key="needle_draws").set_value(1).run()
    next(b for b in at.button if b.label.startswith("Switch heads off")).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ablation = {t["name"]: t for t in figure(at.get("plotly_chart")[2])["data"]}
    best = dense.positions[int(np.argmax(dense.answer_prob))]  # "at the position where the model finds it best"
    one_off = explorer.needle_probe(TEXT, positions=(best,), max_tokens=192, ablate=dense.top_heads(1))
    top_off = values(ablation["top k retrieval heads off"]["y"])
    assert len(top_off) == 4 and top_off[0] == pytest.approx(one_off.answer_prob[0], rel=1e-4)
    assert len(values(ablation["k random heads off (median)"]["y"])) == 4

    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [0], "columns": [], "cells": []}}  # a click
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Dense attention"
    i = int(np.lexsort((dense.answer_prob, dense.retrieval[:, layer, head]))[-1])
    prompt = dense.prompts[i]
    enc = at.session_state["encoded"]
    assert (enc.model, enc.layer, enc.text_key) == ("smollm2", layer, content_key(prompt.text))
    assert at.session_state["head"] == head and at.session_state["query"] == prompt.answer[0]
    assert at.session_state["selection"] == f"{prompt.fact[0]}-{prompt.fact[1] - 1}"
    # the answer's own row, the fact outlined on it: not the fact's own attention summed
    assert any("outlined on what the followed token attends to" in c.value for c in at.caption)
    assert not any(t.get("title", {}).get("text", "").startswith("Summed attention")
                   for t in (figure(c)["layout"] for c in at.get("plotly_chart")))


def test_the_model_view_gains_the_retrieval_score_once_a_probe_ran(app, probed):
    at = _needle(app)
    assert not at.exception
    at.switch_page("views/model.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    grid = figure(at.get("plotly_chart")[0])
    scores = next(t for t in grid["data"] if t["name"] == "retrieval")
    np.testing.assert_allclose(values(scores["marker"]["color"]), probed[0].retrieval.mean(0).reshape(-1), atol=1e-9)
    at.session_state["needle_points"] = 3  # another probe, not made: no column
    at.run()
    assert not any(t["name"] == "retrieval" for t in figure(at.get("plotly_chart")[0])["data"])


def test_an_encoder_is_refused_with_a_switch_to_smollm2(app):
    at = _needle(app, model="minilm")
    assert not at.exception
    assert "is an encoder" in said(at.warning) and not at.get("plotly_chart")
    next(b for b in at.button if b.label == "Switch to SmolLM2").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["encoded"].model == "smollm2" and at.get("plotly_chart")


@pytest.mark.parametrize("bad, words", [
    ({"needle_answer": ""}, "the answer is empty"),
    ({"needle_answer": "land"}, "does not begin a token of its own"),  # " is" + "land": the tokenizer's " island"
    ({"needle_fact": "The secret code of the archive is 7391. " * 10, "needle_tokens": 64}, "no room is left"),
])
def test_bad_inputs_are_said_and_the_page_stays_usable(app, bad, words):
    at = _needle(app)
    for key, value in bad.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception and words in said(at.error)
    assert at.text_input(key="needle_fact") and at.text_area(key="needle_question")
    for key in bad:
        at.session_state[key] = {**SETUP, "needle_answer": npb.ANSWER, "needle_fact": npb.FACT}[key]
    at.run()
    assert not at.exception and not at.error and at.get("plotly_chart")
