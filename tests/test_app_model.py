"""AppTest of the model view: every layer and head drawn from one capture, and a chosen square
becoming the layer and head of every page without encoding again."""
import time

import conftest
import numpy as np
from conftest import SHORT_SAMPLE, figure, values

import explorer.core.encoding as encoding
import ui.compute
from explorer.analysis.model_view import model_view
from explorer.core.encoding import encode_layers, first_tokens
from explorer.core.samples import load_sample

PAGE = "views/model.py"


def test_the_grid_and_a_chosen_head_without_a_second_encoding(app, monkeypatch):
    calls = []
    real_layers, real_one = encoding.encode_layers, encoding.encode
    monkeypatch.setattr(ui.compute, "encode_layers", lambda *a, **k: calls.append("every layer") or real_layers(*a, **k))
    monkeypatch.setattr(encoding, "encode", lambda *a, **k: calls.append("one layer") or real_one(*a, **k))
    at = app
    at.sidebar.checkbox(key="auto_head").uncheck().run()  # stay on layer 0 until a square is chosen
    at = conftest.open_page(at, PAGE, sample=SHORT_SAMPLE)
    assert not at.exception and not at.error, [e.value for e in at.error]
    grid = figure(at.get("plotly_chart")[0])
    entropy = next(t for t in grid["data"] if t["name"] == "entropy")
    layer_head = values(entropy["customdata"]).reshape(-1, 3)[:, :2]
    assert len(layer_head) == 6 * 12 and set(map(tuple, layer_head.astype(int))) == {(l, h) for l in range(6)
                                                                                       for h in range(12)}
    shares = values(entropy["marker"]["color"])
    assert np.all((shares > 0) & (shares <= 1))
    at = whole_text(at)  # the first window's grid came first; the whole text's is made on a thread
    encodes = list(calls)
    at.session_state["_pick"] = (3, 5)  # what a click on the square of layer 3, head 5 does
    at.run()
    at.switch_page("views/overview.py").run()
    assert not at.exception
    assert at.session_state["encoded"].layer == 3 and at.session_state["head"] == 5
    assert any(c.value.startswith("2,709 tokens · 12 heads · layer 3") for c in at.sidebar.caption)
    assert calls == encodes  # no encoding after the pick: the capture (made here or held) serves layer 3
    assert "Head 5 of layer 3" in at.info[0].value


def whole_text(at, timeout_s: float = 240):
    """Run the page again until it shows the whole text's grid, not the first window's."""
    deadline = time.monotonic() + timeout_s
    while any("first model window" in i.value for i in at.info):
        assert time.monotonic() < deadline, "the whole text's grid was not made in time"
        time.sleep(1)
        at.run()
    return at


def grid_entropy(at) -> np.ndarray:
    """The drawn grid's normalised entropy, [layer, head]."""
    trace = next(t for t in figure(at.get("plotly_chart")[0])["data"] if t["name"] == "entropy")
    cells = values(trace["customdata"]).reshape(-1, 3)[:, :2].astype(int)
    out = np.full(cells.max(0) + 1, np.nan)
    out[cells[:, 0], cells[:, 1]] = values(trace["marker"]["color"])
    return out


def test_a_long_text_shows_its_first_window_then_the_whole_text(app):
    text = load_sample(SHORT_SAMPLE)[:7000]  # about 1,500 MiniLM tokens: three windows
    at = app
    at.sidebar.checkbox(key="auto_head").uncheck().run()
    at = conftest.open_page(at, PAGE, source="Paste", text=text)
    assert not at.exception and any("first model window only: its 512 tokens of" in i.value for i in at.info)
    first = model_view(encode_layers(first_tokens(text, "minilm", 510), "minilm"))  # 510 of the text, [CLS], [SEP]
    np.testing.assert_allclose(grid_entropy(at), first.pivot(index="layer", columns="head", values="entropy"),
                               rtol=1e-5)
    at = whole_text(at)
    whole = model_view(encode_layers(text, "minilm"))
    np.testing.assert_allclose(grid_entropy(at), whole.pivot(index="layer", columns="head", values="entropy"),
                               rtol=1e-5)


def test_synthetic_vectors_have_no_model_to_show(app):
    at = app
    at.sidebar.radio(key="source").set_value("Synthetic").run()
    at.sidebar.button[0].click().run()
    at.switch_page(PAGE).run()
    assert not at.exception and any("no model layers" in i.value for i in at.info)
