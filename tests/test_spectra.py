"""Spectra of dense attention and error-against-rank curves, against brute force."""
import math

import pytest
import torch

import explorer
from explorer.analysis import spectra


def qk(n, d=4, scale=2.0, heads=2, seed=0):
    doc = explorer.synthetic(n, heads=heads, head_dim=d, seed=seed)
    return doc.q * scale, doc.k * scale, doc.v


def dense_matrix(q, k):
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)


def test_exact_spectrum_matches_svdvals_and_energy():
    q, k, _ = qk(120)
    p = dense_matrix(q, k)[1]
    spec = spectra.spectrum(q, k, head=1)
    s = torch.linalg.svdvals(p)
    torch.testing.assert_close(spec.values, s)
    assert spec.total_energy == pytest.approx(float(p.square().sum()), rel=1e-5)
    assert float(spec.energy[-1]) == pytest.approx(1.0, abs=1e-5)
    share = s.square().cumsum(0) / s.square().sum()
    for level in (0.9, 0.99):
        assert spec.effective_rank(level) == int((share < level).sum()) + 1
    assert spec.method.startswith("exact") and spec.residual_bound == 0.0


def test_causal_spectrum_uses_masked_matrix():
    q, k, _ = qk(40)
    p = torch.softmax((q @ k.transpose(1, 2) / 2.0).masked_fill(torch.ones(40, 40).triu(1).bool(), -math.inf), -1)
    torch.testing.assert_close(spectra.spectrum(q, k, head=0, causal=True).values, torch.linalg.svdvals(p[0]))


def test_randomized_spectrum_close_to_exact():
    q, k, _ = qk(400, heads=1)
    exact = spectra.spectrum(q, k)
    approx = spectra.spectrum(q, k, exact_max=100, rank=30, oversample=10, power_iters=3)
    assert approx.method.startswith("randomized") and approx.values.numel() == 30
    diff = (approx.values - exact.values[:30]).abs()
    assert float((diff / exact.values[:30]).max()) < 1e-3
    assert float(diff.max()) <= approx.residual_bound  # Weyl: |sigma_i - computed| <= ||P - QQ^T P||_2
    assert approx.total_energy == pytest.approx(exact.total_energy, rel=1e-5)
    assert (approx.energy <= exact.energy[:30] + 1e-6).all()
    tail = float(exact.values[40:].double().square().sum().sqrt())  # what a width-40 sketch can at best miss
    assert tail <= approx.residual_fro <= tail * 1.1


def test_effective_rank_beyond_computed_values_is_none():
    q, k, _ = qk(300, d=16, scale=1.0, heads=1)  # a flat spectrum: 99% needs many values
    spec = spectra.spectrum(q, k, exact_max=10, rank=5, power_iters=1)
    assert spec.effective_rank(0.99) is None
    with pytest.raises(ValueError, match="share=1.5"):
        spec.effective_rank(1.5)


def test_k_grid():
    assert spectra.k_grid(1) == [1]
    assert spectra.k_grid(100, cap=40) == [1, 2, 4, 8, 16, 32, 40]
    assert spectra.k_grid(10) == [1, 2, 4, 8, 10]
    with pytest.raises(ValueError):
        spectra.k_grid(0)


def test_error_curves_svd_is_best_and_reaches_zero():
    q, k, v = qk(48)
    seen = []
    curves = spectra.error_curves(q, k, v, head=1, ks=[1, 4, 16, 48, 99], settings={"projection": "mean"},
                                  progress=lambda done, total: seen.append((done, total)))
    assert curves.ks == [1, 4, 16, 48] and curves.rows.numel() == 48
    p = dense_matrix(q, k)[1:2]
    u, s, vt = torch.linalg.svd(p)
    for i, rank in enumerate(curves.ks):
        pk = u[..., :rank] @ torch.diag_embed(s[:, :rank]) @ vt[:, :rank]
        assert curves.weight_error["svd"][i] == pytest.approx(float((pk - p).norm() / p.norm()), abs=1e-4)
        # Eckart-Young: no rank-k matrix is closer to P in Frobenius norm (all rows measured here)
        for method in ("linformer", "nystrom"):
            assert curves.weight_error["svd"][i] <= curves.weight_error[method][i] + 1e-5
    assert curves.output_error["svd"][-1] < 1e-4 and curves.weight_error["svd"][-1] < 1e-4
    assert seen == [(i, 2 * 4 + 1) for i in range(1, 2 * 4 + 2)]  # each method at each k, then the SVD


def test_error_curves_validate():
    q, k, v = qk(20)
    with pytest.raises(ValueError, match="head 5"):
        spectra.error_curves(q, k, v, head=5)
    with pytest.raises(ValueError, match="pinv_iters=0"):
        spectra.error_curves(q, k, v, settings={"pinv_iters": 0})
    with pytest.raises(ValueError, match="k must be at least 1"):
        spectra.error_curves(q, k, v, ks=[0, 2])


def test_figures_stay_small_for_long_inputs():
    from explorer.figures import lowrank as figs

    values = torch.linspace(1, 1e-3, 5000)
    energy = values.square().cumsum(0) / values.square().sum()
    fig = figs.spectrum_chart(values, energy, {0.9: 40, 0.99: None}, chosen=64)
    assert all(len(trace.x) <= figs.MAX_POINTS for trace in fig.data)
    assert fig.data[0].x[0] == 1 and fig.data[0].x[-1] == 5000
    curves = figs.error_curves_chart([1, 2, 4], {"svd": [0.5, 0.1, 0.0]}, {"svd": [0.6, 0.2, 0.0]}, chosen=2)
    assert min(curves.data[0].y) > 0  # an exact zero is clipped for the log axis
    strip = figs.segment_strip([0, 40_000, 100_000], [f"t{i}" for i in range(100_000)], "segment")
    assert len(strip.data[0].x) <= 1500 and set(strip.data[0].z[0]) == {0, 1}
    row = figs.weight_rows(torch.randn(100_000), torch.randn(100_000), [f"t{i}" for i in range(100_000)], "nystrom", 7)
    assert all(len(trace.x) <= 3000 for trace in row.data)
