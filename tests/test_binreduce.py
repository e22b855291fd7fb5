"""The compiled block reductions (explorer.core.binreduce) against torch's own, on score blocks
with masked keys (-inf), padding slots and widths the vector loops do not divide."""
import pytest
import torch

from explorer.core import binreduce


@pytest.mark.parametrize("bins,width,kk", [(256, 64, 8), (7, 13, 5), (3, 1, 3), (40, 33, 64)])
def test_compiled_reductions_equal_torch(bins, width, kk):
    g = torch.Generator().manual_seed(bins * width)
    s = torch.randn(2, 9, bins * width, generator=g) * 6
    s[0, 0, ::3] = float("-inf")  # masked keys
    s[1, 2, 1:] = -200.0  # far below the maximum: weights that underflow to 0
    padding = torch.zeros(bins * width)
    padding[width - 1 :: width * 2] = -1.0  # a padding slot in every other bin
    s[..., padding < 0] = float("-inf")
    kk = min(kk, int((padding == 0).sum()))
    cells = s.view(2, 9, bins, width)
    want_max, want_top = cells.amax(-1), s.amax(-1)
    want_e = torch.exp(s - want_top[..., None])
    got = s.clone()
    bin_max, top, bin_sum, spent, slot, value = binreduce.bin_reduce(got, bins, width, padding, kk)
    assert torch.equal(bin_max, want_max) and torch.equal(top, want_top)
    torch.testing.assert_close(got, want_e, rtol=2e-7, atol=1e-37)  # about an ulp, 0 where torch underflows
    torch.testing.assert_close(bin_sum, want_e.view(2, 9, bins, width).sum(-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(spent, torch.special.xlogy(want_e, want_e).sum(-1), rtol=1e-5, atol=1e-5)
    values, _ = (want_e + padding).topk(kk, dim=-1)
    torch.testing.assert_close(value, values, rtol=2e-7, atol=0)
    assert torch.equal(got.gather(-1, slot), value) and bool((padding[slot] == 0).all())  # slots name the weights


def test_what_it_cannot_take_goes_to_the_eager_pass():
    assert binreduce.available(torch.zeros(4), 8)
    assert not binreduce.available(torch.zeros(4, dtype=torch.float64), 8)
    assert not binreduce.available(torch.zeros(4), binreduce.MAX_K + 1)
    assert not binreduce.available(torch.zeros(4, 2).T, 8)  # not contiguous
