"""The bundled models load from their packages, offline, with real weights: SmolLM2's tokenizer
agrees with the GGUF file's own vocabulary, its converted copy is cached, and bad names give
sentences a person can act on."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from explorer.core.bundled import BUNDLED, _locate, cache_folder, describe, load_parts

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Größe, naïve café, Ελληνικά, 東京タワー 🙂",
    "def f(x):\n    return x ** 2  # squares\n",
    "Call 555-0123 before 12:30 on 2024-02-29, or pay $1,234.56.",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An empty cache folder of the test's own, so the first load converts the tokenizer."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("model-cache")
        mp.setenv("EXPLORER_MODEL_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def smollm2(cache):
    return load_parts("smollm2", attn_implementation="eager")


@pytest.fixture(scope="module")
def vocab():
    """The token strings stored in the GGUF file, read with the gguf package, not transformers."""
    import gguf

    folder, name = _locate("smollm2")
    field = gguf.GGUFReader(Path(folder) / name).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def test_smollm2_config_and_size(smollm2):
    config, _, model = smollm2
    assert config.model_type == "llama"
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert config.max_position_embeddings == BUNDLED["smollm2"].positions == 8192
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert not model.training and config._attn_implementation == "eager"
    assert "8,192 positions" in describe("smollm2") and describe("some/model") == "some/model"


@pytest.mark.parametrize("text", SENTENCES)
def test_smollm2_tokens_are_the_gguf_vocabulary(smollm2, vocab, text):
    tokenizer = smollm2[1]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [vocab[i] for i in ids]
    assert tokenizer.decode(ids) == text


def test_smollm2_adds_no_special_tokens(smollm2):
    tokenizer = smollm2[1]
    assert tokenizer.is_fast
    assert tokenizer("word")["input_ids"] == tokenizer("word", add_special_tokens=False)["input_ids"] == [3002]


def test_cached_tokenizer_gives_the_same_ids(smollm2, cache):
    folder = cache_folder(BUNDLED["smollm2"]) / "tokenizer"
    assert folder.is_relative_to(cache) and (folder / "tokenizer.json").is_file()
    assert folder.stat().st_mode & 0o777 == 0o755 and not list(folder.parent.glob(".tokenizer-*"))
    _, tokenizer, _ = load_parts("smollm2")
    assert Path(tokenizer.name_or_path) == folder
    for text in SENTENCES:
        assert tokenizer(text)["input_ids"] == smollm2[1](text)["input_ids"]


def test_eager_forward_is_finite(smollm2):
    _, tokenizer, model = smollm2
    ids = tokenizer(" ".join(SENTENCES), return_tensors="pt")["input_ids"][:, :50]
    assert ids.shape[1] == 50
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    assert hidden.shape == (1, 50, 576) and torch.isfinite(hidden).all()


def test_minilm_loads():
    config, tokenizer, model = load_parts("minilm")
    assert (config.model_type, config.num_hidden_layers, config.max_position_embeddings) == ("bert", 6, 512)
    assert tokenizer.is_fast and not model.training
    assert math.isclose(sum(p.numel() for p in model.parameters()), 22.7e6, rel_tol=0.02)


@pytest.mark.parametrize("key", sorted(BUNDLED))
def test_missing_package_names_it_and_the_command(monkeypatch, key):
    model = BUNDLED[key]
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == model.module else find_spec(name, *rest))
    with pytest.raises(ValueError) as err:
        load_parts(key)
    assert model.package in str(err.value) and model.install in str(err.value)


@pytest.mark.parametrize("name", ["../../etc/passwd", "no/such-model-xyz", "/no/such/folder", "/etc/hostname", "/tmp"])
def test_bad_names_give_our_sentences(name):
    with pytest.raises(ValueError) as err:
        load_parts(name)
    text = str(err.value)
    assert name in text and "repo_type" not in text and "repo_id" not in text


def test_gguf_folders(tmp_path):
    folder, name = _locate("smollm2")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / name).symlink_to(Path(folder) / name)
    assert _locate(str(tmp_path / "one")) == (str(tmp_path / "one"), name)
    (tmp_path / "one" / "copy.gguf").symlink_to(Path(folder) / name)
    with pytest.raises(ValueError, match="2 .gguf files"):
        load_parts(str(tmp_path / "one"))


def test_a_model_named_with_or_without_its_device_is_loaded_once():
    """load_model(m) and load_model(m, "cpu") on a CPU are the same copy (in_model's scoring asked by name)."""
    from explorer.core.device import pick_device
    from explorer.core.encoding import load_model

    assert load_model("minilm") is load_model("minilm", str(pick_device()))
