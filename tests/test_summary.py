"""A head described in words, from statistics measured on real attention patterns."""
import torch

import explorer
from explorer.analysis.model_view import layer_stats
from explorer.analysis.summary import describe


def head_words(q_scale: float, heads: int = 1) -> str:
    doc = explorer.synthetic(400, heads=heads, head_dim=16, seed=0)
    doc.q = doc.q * q_scale
    stats = layer_stats(doc, torch.arange(0, 400, 7), local=8)
    return describe({name: value[0] for name, value in stats.items()}, doc.n, 8, "[CLS]")


def test_a_head_of_near_zero_queries_is_said_to_be_nearly_uniform():
    words = head_words(1e-3)
    assert words.startswith("Nearly uniform (entropy 100% of a uniform row's)")
    assert "half of it spreads over 200 of 400 keys" in words and "(an attention sink)" not in words


def test_a_sharp_head_is_focused_and_a_sink_is_named():
    doc = explorer.synthetic(400, heads=1, head_dim=16, seed=0)
    stats = {"entropy": 0.1, "local_mass": 0.02, "first_mass": 0.6, "half_keys": 1.0, "distance": 150.0}
    words = describe(stats, doc.n, 8, "[CLS]")
    assert words == ("Focused (entropy 10% of a uniform row's): 2% of each query's attention stays within 8 tokens, "
                     "60% goes to [CLS] (an attention sink), and half of it spreads over 1 of 400 keys; mean "
                     "distance 150 tokens.")


def test_three_tokens_of_uniform_attention_are_no_sink():
    stats = {"entropy": 1.0, "local_mass": 1.0, "first_mass": 0.34, "half_keys": 2.0, "distance": 1.0}
    assert "(an attention sink)" not in describe(stats, 3, 8)
    assert "(an attention sink)" in describe({**stats, "first_mass": 0.7}, 3, 8)
