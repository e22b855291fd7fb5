"""The page "Inside the model" under AppTest, SmolLM2 (real weights) on a short pasted text: its table
and loss chart are what the library computes (dense against the model's own logits), a click on a hurt
prediction opens the Dense attention page at that query, and bad inputs each get a message while the
page stays usable."""
import numpy as np
import pytest
import torch
from conftest import APP, KEEPER, TIMEOUT, encode_in_app, figure, said, values
from streamlit.testing.v1 import AppTest

import explorer
from explorer.analysis import in_model as im
from explorer.core.encoding import load_model

TEXT = KEEPER * 4
TOKENS, WINDOW = 96, 24
LINK = {"run": "false", "auto_head": "false", "inside_tokens": str(TOKENS), "inside_window": str(WINDOW),
        "p.sinks.window": str(WINDOW - 4)}


def _opened(model: str = "smollm2", text: str = TEXT, warned: list | None = None, **link) -> AppTest:
    """The page over `text` under `model`, opened from a link with LINK's settings and `link`'s; the
    warnings each step showed go into `warned` (a link's refused value is named on the first page that
    knows the setting: this page, or the first one once this process has imported it)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({**LINK, "model": model, **link})
    steps = [at.run, lambda: encode_in_app(at, source="Paste", text=text),
             lambda: at.switch_page("views/inside.py").run()]
    for step in steps:
        step()
        if warned is not None:
            warned.append(said(at.warning))
    return at


def _swap(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label.startswith("Swap")).click().run()


@pytest.fixture(scope="module")
def scored():
    return _swap(_opened())


def test_the_table_and_the_loss_chart_are_the_librarys(scored):
    at = scored
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["Mechanism"]) == ["Dense (the model's own)", f"Window only ({WINDOW})",
                                        f"Sinks + window (4 + {WINDOW - 4})"]
    lm = load_model("smollm2")
    ids = lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:TOKENS]
    with torch.no_grad():
        logits = lm.causal_lm(input_ids=torch.tensor([ids])).logits[0, :-1]
    own = torch.nn.functional.cross_entropy(logits.double(), torch.tensor(ids[1:])).exp().item()
    assert table["Perplexity"].iloc[0] == pytest.approx(own, rel=1e-4)
    alone = explorer.in_model(TEXT, "smollm2", "sinks", {"sinks": 0, "window": WINDOW}, max_tokens=TOKENS)
    assert table["Perplexity"].iloc[1] == pytest.approx(alone.perplexity, rel=1e-9)
    assert table["× dense"].iloc[1] > 1.05  # a window a quarter of the text's length costs something here
    chart = next(figure(c) for c in at.get("plotly_chart") if figure(c)["data"][0]["name"].startswith("Window only"))
    line = chart["data"][0]
    np.testing.assert_allclose(values(line["y"]), im.loss_gap(alone, 64), rtol=1e-6, atol=1e-9)
    assert len(values(line["x"])) == TOKENS - 1 and "[" in line["text"][10]


def test_a_click_on_a_hurt_prediction_opens_dense_attention_at_its_query(scored):
    at = scored
    hurt = next(d for d in at.dataframe if d.key == "inside_hurt")
    query = int(hurt.value["query"].iloc[0])
    at.session_state[hurt.key] = {"selection": {"rows": [0], "columns": [], "cells": []}}  # a click on row 0
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Dense attention"
    assert at.session_state["query"] == query and at.session_state["head"] == 0


def test_an_encoder_is_refused_with_a_switch_to_smollm2():
    at = _opened(model="minilm")
    assert "is an encoder" in said(at.warning) and "Pick smollm2" in said(at.warning) and not at.error
    next(b for b in at.button if b.label.startswith("Switch to")).click().run()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["encoded"].model == "smollm2" and at.multiselect(key="inside_mechs")


def test_bad_inputs_get_a_message_and_leave_the_page_usable():
    at = _opened(text="Key")  # one token
    at = _swap(at)
    assert "at least 2" in said(at.error) and not at.exception
    warned = []
    at = _opened(warned=warned, inside_tokens="1000000000", inside_mechs='["lowrank", "sinks"]')
    assert "inside_tokens: is out of range" in " ".join(warned)  # refused from the link, the default kept
    zero = []
    _opened(model="minilm", warned=zero, inside_tokens="0")
    assert "inside_tokens: is out of range" in " ".join(zero)
    assert at.number_input(key="inside_tokens").value == 2048
    assert "Low-rank attention has no causal form" in said(at.error)
    at = _swap(at)
    assert not at.exception and list(at.dataframe[0].value["Mechanism"])[1].startswith("Sinks + window")
