"""One text's statistics pass cut into parts of its query rows and merged back equals the one pass,
here and through Ray (explorer.core.split, explorer.sweep.split)."""
import pytest
import torch

from explorer.core.bias import ALiBi
from explorer.core.rule import AttentionRule
from explorer.core.split import merge_stats, split_rows
from explorer.core.stats import attention_stats

N, D = 301, 8  # n not a multiple of the parts


def assert_same_stats(got, want):
    assert got.rows is None if want.rows is None else torch.equal(got.rows, want.rows)
    assert got.map.per_bin == want.map.per_bin
    assert (got.map.row_edges, got.map.col_edges) == (want.map.row_edges, want.map.col_edges)
    for name in ("lse", "entropy", "max_weight", "topk_weight", "output"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name))
    kept = want.topk_weight > 0  # masked keys tie at weight 0: their order among them is arbitrary
    assert torch.equal(got.topk_index[kept], want.topk_index[kept])
    torch.testing.assert_close(got.map.mean, want.map.mean, equal_nan=True)
    torch.testing.assert_close(got.map.max, want.map.max, equal_nan=True)


def qkv(dtype):
    torch.manual_seed(0)
    return [torch.randn(2, N, D, dtype=dtype) for _ in range(3)]


RULES = {"causal": AttentionRule.plain(D, True), "sliding window": AttentionRule(D**-0.5, True, window=40),
         "bidirectional": AttentionRule.plain(D, False),
         "ALiBi": AttentionRule(D**-0.5, True, bias=ALiBi((0.5, 0.125)))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
@pytest.mark.parametrize("parts", [1, 3, 7])
def test_merged_parts_equal_the_one_pass(dtype, rule, parts):
    q, k, v = qkv(dtype)
    one = attention_stats(q, k, v, rule=rule, grid=64)
    merged = merge_stats([attention_stats(q, k, v, rule=rule, grid=64, rows=p) for p in split_rows(N, parts)])
    assert_same_stats(merged, one)


def test_parts_of_sampled_rows_merge_to_the_pass_on_those_rows():
    q, k, v = qkv(torch.float32)
    rows = torch.tensor([0, 5, 17, 100, 150, 151, 299, 300])
    one = attention_stats(q, k, v, causal=True, grid=64, rows=rows)
    merged = merge_stats([attention_stats(q, k, v, causal=True, grid=64, rows=p) for p in split_rows(N, 3, rows)])
    assert_same_stats(merged, one)


def test_parts_cover_every_row_once_in_order():
    parts = split_rows(10, 4)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert len(split_rows(3, 8)) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_bad_part_count_is_refused(bad):
    with pytest.raises(ValueError, match="parts="):
        split_rows(10, bad)


def test_statistics_of_different_grids_do_not_merge():
    q, k, v = qkv(torch.float32)
    with pytest.raises(ValueError, match="different texts or grids"):
        merge_stats([attention_stats(q, k, v, grid=64, rows=[0]), attention_stats(q, k, v, grid=32, rows=[1])])


def test_split_across_ray_workers_equals_the_one_pass():
    import ray

    from explorer.sweep.split import split_stats

    q, k, v = qkv(torch.float32)
    rule = RULES["sliding window"]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # a fresh instance, ours
    try:
        merged = split_stats(q, k, v, 3, rule=rule, grid=64)
    finally:
        ray.shutdown()
    assert_same_stats(merged, attention_stats(q, k, v, rule=rule, grid=64))
