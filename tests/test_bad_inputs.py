"""Bad or hostile input to the library: a ValueError with a clear text, or (half precision) an
answer computed in float32 - never a crash, a NaN or a silently changed request."""
import threading

import pytest
import torch

import explorer
from explorer.core.encoding import load_model
from explorer.core.stats import attention_stats
from explorer.mechanisms import REGISTRY
from explorer.mechanisms.relpos import t5_checkpoint_values

KEYS = list(REGISTRY)


def qkv(heads=2, n=24, d=8, dtype=torch.float32):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=3)
    return tuple(x.to(dtype) for x in (doc.q, doc.k, doc.v))


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(key, bad):
    q, k, v = qkv()
    k[0, 3, 1] = bad
    with pytest.raises(ValueError, match="k holds NaN or infinite values"):
        REGISTRY[key].run(q, k, v)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("shape", [(0, 24, 8), (2, 24, 0)])
def test_zero_heads_or_zero_head_dim_are_refused(key, shape):
    q = torch.zeros(shape)
    with pytest.raises(ValueError, match="heads and head_dim must be at least 1"):
        REGISTRY[key].run(q, q.clone(), q.clone())


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dtypes", [(torch.float16,) * 3, (torch.bfloat16,) * 3, (torch.float32, torch.float16, torch.float64)])
def test_half_precision_and_mixed_dtypes_are_computed_in_float32(key, dtypes):
    q, k, v = qkv()
    low = [x.to(dt) for x, dt in zip((q, k, v), dtypes)]
    got = REGISTRY[key].run(*low)
    want = REGISTRY[key].run(*(x.float() for x in low))  # the same rounded values, in float32
    assert got.output.dtype == torch.float32
    torch.testing.assert_close(got.output, want.output)


def test_the_statistics_pass_refuses_nan_and_takes_half_precision():
    q, k, v = qkv()
    got = attention_stats(q.half(), k.half(), v.half(), grid=8)
    want = attention_stats(q.half().float(), k.half().float(), v.half().float(), grid=8)
    torch.testing.assert_close(got.entropy, want.entropy)
    v[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="v holds NaN"):
        attention_stats(q, k, v)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_gives_the_float32_result_of_the_same_values(half):
    """Every mechanism, the statistics pass and model_attention compute half inputs in float32, to 1e-5."""
    low = [x.to(half) for x in qkv()]
    exact = [x.float() for x in low]
    for key in KEYS:
        got, want = REGISTRY[key].run(*low), REGISTRY[key].run(*exact)
        torch.testing.assert_close(got.output, want.output, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.weights([0, 7]), want.weights([0, 7]), atol=1e-5, rtol=1e-5)
    got, want = attention_stats(*low, grid=8), attention_stats(*exact, grid=8)
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-5, rtol=1e-5)
    doc = explorer.synthetic(24, heads=2, head_dim=8, seed=3)
    doc.q, doc.k = low[:2]
    got = explorer.model_attention(doc, [0, 7])
    doc.q, doc.k = exact[:2]
    torch.testing.assert_close(got, explorer.model_attention(doc, [0, 7]), atol=1e-5, rtol=1e-5)


def test_scores_that_overflow_are_refused_by_every_entry_point():
    """q and k x 1e30 are finite, but their scores (1e60) are not in float32; q x 1e30 alone still fits."""
    doc = explorer.synthetic(24, heads=2, head_dim=8, seed=3)
    big = (doc.q * 1e30, doc.k * 1e30, doc.v)
    says = "q and k are so large that their scores overflow float32: the largest .* scale them down"
    for key in KEYS:
        with pytest.raises(ValueError, match=says):
            REGISTRY[key].run(*big)
    with pytest.raises(ValueError, match=says):
        attention_stats(*big)
    doc.q, doc.k = big[:2]
    with pytest.raises(ValueError, match=says):
        explorer.model_attention(doc, [0, 5])


def test_a_synthetic_text_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"synthetic\(n=1,000,000,000,000\) needs about .* GiB of memory, and .* GiB is free"):
        explorer.synthetic(n=10**12)


@pytest.mark.parametrize("kwargs, says", [
    ({"n": 10, "needles": 100}, "at most 5"),
    ({"n": 10, "margin": float("nan")}, "margin=nan must be a finite number"),
    ({"n": 10, "noise": float("inf")}, "noise=inf must be a finite number"),
    ({"n": 10, "noise": -1.0}, "noise=-1.0 must be >= 0"),
    ({"n": 2.5}, "n=2.5 must be an integer"),
    ({"n": 10, "heads": True}, "heads=True must be an integer"),
    ({"n": 10, "needles": [(1, 2), "x"]}, "needles must be a count or a list"),
    ({"n": 10, "needles": [(1, 20)]}, "lies outside 0..9"),
    ({"n": 10, "seed": -1}, "seed=-1 must be an integer"),
])
def test_synthetic_refuses_what_it_cannot_make(kwargs, says):
    with pytest.raises(ValueError, match=says):
        explorer.synthetic(**kwargs)


@pytest.mark.parametrize("kwargs, says", [
    ({"window": 2.5}, "window=2.5 must be a whole number"),
    ({"stride": "8"}, "stride='8' must be a whole number"),
    ({"layer": 1.0}, "layer=1.0 is out of range"),
    ({"batch": 0}, "batch=0 must be at least 1"),
])
def test_encode_refuses_wrong_kinds_of_arguments(kwargs, says):
    with pytest.raises(ValueError, match=says):
        explorer.encode("A short text.", **kwargs)


def test_encode_refuses_a_lone_surrogate():
    with pytest.raises(ValueError, match="not valid Unicode at position 6"):
        explorer.encode("Broken\ud800 text")


def test_loaders_say_what_failed(tmp_path):
    with pytest.raises(ValueError, match="could not load model"):
        load_model(str(tmp_path / "nothing here"))
    with pytest.raises(ValueError, match="could not load T5 checkpoint"):
        t5_checkpoint_values(str(tmp_path / "no such checkpoint"))
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError):
        t5_checkpoint_values(str(tmp_path))


def test_concurrent_encodes_on_one_model_each_get_their_own_numbers():
    """The capture hooks sit on the shared model: threads must not see each other's layers."""
    lm = load_model("minilm")
    texts = [f"Text number {i}: " + " ".join(f"word{i}x{j}" for j in range(60 + 7 * i)) for i in range(6)]
    alone = [explorer.encode(t, lm, layer=i % 4) for i, t in enumerate(texts)]
    got, errors = [None] * len(texts), []

    def work(i):
        try:
            for _ in range(2):
                got[i] = explorer.encode(texts[i], lm, layer=i % 4)
        except Exception as err:  # noqa: BLE001 - collected and reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for a, b in zip(alone, got):
        torch.testing.assert_close(b.q, a.q)
        torch.testing.assert_close(b.v, a.v)
