"""Position biases of a rule (explorer.core.bias) against the models' own code: ALiBi's position term
as Bloom and Falcon build it (Falcon's in bfloat16) over long positions, and relative buckets added
per block, for keys in any order, as T5's bucketing (transformers' T5Attention) gives them."""
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from explorer.core.bias import ALiBi, RelativeBuckets


@pytest.mark.parametrize("family,precision", [("bloom", "float32"), ("falcon", "bfloat16")])
@pytest.mark.parametrize("heads", [4, 12])
def test_alibi_is_the_families_own_slope_times_position(family, precision, heads):
    import importlib

    build = importlib.import_module(f"transformers.models.{family}.modeling_{family}").build_alibi_tensor
    n = 3000  # far past bfloat16's 8 bits: Falcon's term moves in steps there
    theirs = build(torch.ones(1, n, dtype=torch.long), heads, torch.float32).view(heads, n)  # a mask as models get it
    bias = ALiBi(tuple(theirs[:, 1].tolist()), precision=precision)
    assert torch.equal(bias.position_term(torch.arange(n)), theirs)
    rows, keys = torch.tensor([5, 2999]), torch.arange(n)
    scores = bias.add_to(torch.zeros(heads, 2, n), rows, keys)
    torch.testing.assert_close(scores, theirs[:, None, :] - theirs[:, rows, None])


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("max_distance", [20, 128])
def test_buckets_added_per_block_are_t5s_for_keys_in_any_order(bidirectional, max_distance):
    table = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    bias = RelativeBuckets(tuple(map(tuple, table.tolist())), max_distance, bidirectional)
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(1))
    for keys in (torch.arange(600), perm, torch.cat([torch.arange(300), torch.full((5,), 600), torch.arange(300, 600)])):
        for rows in (torch.arange(200, 456), torch.tensor([0, 599]), torch.tensor([7])):
            before = torch.randn(3, rows.numel(), keys.numel())
            got = bias.add_to(before.clone(), rows, keys)
            buckets = T5Attention._relative_position_bucket(keys[None, :] - rows[:, None], bidirectional, 32, max_distance)
            assert torch.equal(got, before + table[:, buckets])
