"""encode(): Q/K/V equal what the model's own attention computes, windows cover
every token once, and bad input raises ValueError. Small models are built from
configs with random weights (no download) and saved beside the bundled tokenizer
(conftest's `checkpoints`)."""
import pytest
import torch
from conftest import FAMILIES

import explorer
from explorer.core import attention
from explorer.core.encoding import load_model, window_plan

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")
def _context(lm, layer: int, after: str, ids: list[int]) -> torch.Tensor:
    """What the model's attention produced before its output projection: [heads, T, head_dim]."""
    module = next(m for name, m in lm.model.named_modules() if name.endswith(f"{layer}.{after}"))
    seen = {}
    handle = module.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0].detach()))
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([ids]))
    handle.remove()
    x = seen["x"][0]
    return x.view(x.shape[0], lm.heads, -1).transpose(0, 1)


def _attend(doc) -> torch.Tensor:
    rows = torch.arange(doc.n)
    return attention.weights(doc.q, doc.k, rows, doc.causal) @ doc.v


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1])
def test_short_text_matches_the_models_own_attention(checkpoints, family, layer):
    path, after = checkpoints[family]
    lm = load_model(path)
    doc = explorer.encode(TEXT, path, layer=layer)
    assert len(doc.windows) == 1
    ids = lm.prefix + lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"] + lm.suffix
    assert doc.n == len(ids) == len(doc.tokens) == len(doc.offsets)
    assert doc.causal == (family in ("gpt2", "llama", "qwen2"))
    torch.testing.assert_close(_attend(doc), _context(lm, layer, after, ids), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_long_text_rows_come_from_their_own_window(checkpoints, family):
    path, _ = checkpoints[family]
    lm = load_model(path)
    text = " ".join([TEXT] * 6)
    doc = explorer.encode(text, path, layer=1, window=40, stride=25)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    plan = window_plan(len(ids), 40, 25, lm.causal)
    assert len(plan) > 3 and doc.n == len(ids) + len(lm.prefix) + len(lm.suffix)
    from explorer.core.encoding import _capture

    p = len(lm.prefix)
    for s, e, ks, ke in plan:
        window = torch.tensor([lm.prefix + ids[s:e] + lm.suffix])
        positions = s + torch.arange(window.shape[1])[None] if lm.rotary else None
        got, _ = _capture(lm, [1], window, positions)
        ref = got[1][1][0][:, p + ks - s : p + ke - s]
        if lm.kv_heads != lm.heads:
            ref = ref.repeat_interleave(lm.heads // lm.kv_heads, dim=0)
        torch.testing.assert_close(doc.k[:, p + ks : p + ke], ref)


@pytest.mark.parametrize("n,window,stride,causal", [(1, 8, 6, False), (20, 8, 6, False), (20, 8, 6, True),
                                                    (100, 33, 7, False), (100, 33, 33, True), (8, 8, 1, False)])
def test_window_plan_keeps_every_token_once(n, window, stride, causal):
    plan = window_plan(n, window, stride, causal)
    kept = [t for _, _, ks, ke in plan for t in range(ks, ke)]
    assert kept == list(range(n))
    assert all(s <= ks and ke <= e and e - s <= window for s, e, ks, ke in plan)


def test_bundled_minilm_offsets_point_into_the_text():
    doc = explorer.encode("Hello, long documents!\n\nSecond paragraph.")
    assert doc.q.shape == (12, doc.n, 32) and doc.tokens[0] == "[CLS]" and doc.tokens[-1] == "[SEP]"
    for tok, (a, b) in zip(doc.tokens[1:-1], doc.offsets[1:-1]):
        assert doc.text[a:b].lower() == tok.lstrip("#")


@pytest.mark.parametrize("kwargs,match", [
    (dict(text=""), "empty"), (dict(text="   \n"), "empty"), (dict(text="hi", layer=6), "layer"),
    (dict(text="hi", layer=-1), "layer"), (dict(text="hi", window=10_000), "window"),
    (dict(text="hi", window=100, stride=200), "stride"),
    (dict(text="hi", model="/no/such/folder"), "could not load model"),
    (dict(text="hi", model="no-such-org/no-such-model"), "could not load model"),
])
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        explorer.encode(**kwargs)


def test_a_capture_that_would_not_fit_is_refused_before_it_is_allocated(monkeypatch):
    import explorer.core.device as device

    monkeypatch.setattr(device, "free_bytes", lambda _device: 2**20)  # a machine with 1 MiB free
    with pytest.raises(ValueError, match="6 layer.*GiB of memory.*pick one layer, a shorter text"):
        explorer.encode_layers(TEXT * 20)
