"""The colour scale maps share (explorer.figures.scale), against hand-computed ranges."""
import math

import numpy as np
import pytest
import torch

from explorer.figures.scale import (DECADES, MIN_SHARE, describe, fit_scale, fit_scales, keys_seen, suggest,
                                    transform)


def row(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)[None, :]


def test_a_log_scale_runs_from_the_top_down_to_the_first_percentile():
    values = torch.logspace(-3, 0, 101)  # 1e-3 .. 1, evenly in log
    scale = fit_scale([row(values)], "mean", "log")
    assert scale.zmax == pytest.approx(0.0)
    assert scale.zmin == pytest.approx(float(torch.quantile(values.log10(), 0.01)), abs=1e-6)


def test_a_log_scale_never_reaches_more_than_six_decades_down():
    values = [1e-20] * 50 + [0.5] * 50
    scale = fit_scale([row(values)], "mean", "log")
    assert scale.zmax == pytest.approx(math.log10(0.5)) and scale.zmin == pytest.approx(scale.zmax - DECADES)


def test_a_robust_range_is_the_1st_to_99th_percentile_and_says_so():
    values = torch.cat([torch.full((98,), 1e-5), torch.tensor([1e-1, 0.5])]).double()  # two bins stand far above
    scale = fit_scale([row(values)], "mean", "log", robust=True)
    logged = values.log10()
    assert (scale.zmin, scale.zmax) == (pytest.approx(float(torch.quantile(logged, 0.01))),
                                        pytest.approx(float(torch.quantile(logged, 0.99))))
    assert "1st–99th percentile" in scale.label and scale.zmax < math.log10(0.5)  # the top bin saturates


def test_relative_to_uniform_is_zero_for_a_uniform_row_causal_or_not():
    n = 50
    uniform = torch.full((1, n), 1 / n)
    assert np.allclose(transform(uniform, "relative", [0, 1], n), 0.0, atol=1e-6)
    causal_rows = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]  # row i: 1 / (i + 1) on keys <= i
    z = transform(causal_rows, "relative", list(range(n + 1)), n, causal=True)
    assert np.allclose(z[np.isfinite(z)], 0.0, atol=1e-6) and np.isnan(z[0, 1])  # no weight: left uncoloured
    assert keys_seen([0, 10, 20], 20, causal=True).tolist() == [5.5, 15.5]


def test_the_suggested_colouring_shows_structure():
    n = 4096
    nearly_flat = torch.full((64, 64), 1 / n) * (1 + 0.3 * torch.rand(64, 64, generator=torch.Generator().manual_seed(0)))
    assert suggest(nearly_flat, list(range(0, n + 1, 64)), n) == "relative"  # spans under a decade
    peaked = torch.logspace(-6, 0, 64 * 64).reshape(64, 64)
    assert suggest(peaked, list(range(0, n + 1, 64)), n) == "log"


def test_maps_share_one_range_and_zeros_are_left_out():
    a, b = torch.tensor([0.0, 0.2, 0.1]), torch.tensor([0.0, 0.0, 0.8])
    scale = fit_scale([a[None], b[None]], "mean", "log")
    positive = torch.tensor([0.2, 0.1, 0.8])
    assert scale.zmax == pytest.approx(math.log10(0.8), abs=1e-6)
    assert scale.zmin == pytest.approx(float(torch.quantile(positive.double().log10(), 0.01)), abs=1e-6)
    linear = fit_scale([a[None], b[None]], "max", "linear")
    assert (linear.zmin, linear.zmax, linear.pool, linear.mode) == (0.0, pytest.approx(0.8), "max", "linear")


def test_signed_weights_get_a_scale_centred_on_zero_only_when_asked():
    signed = torch.tensor([-0.3, 0.5])
    assert fit_scale([signed[None]], "mean", "log", diverging=True).signed
    assert not fit_scale([torch.tensor([[0.1, 0.5]])], "mean", "log", diverging=True).signed
    assert fit_scale([torch.zeros(1, 4)], "mean", "log").zmin == -12.0


@pytest.mark.parametrize("causal", [True, False])
def test_keys_seen_in_a_sliding_window_is_each_bins_mean_count(causal):
    n, window, edges = 50, 7, [0, 3, 10, 24, 50]
    i, j = np.indices((n, n))
    seen = ((j <= i) & (i - j < window)) if causal else (np.abs(i - j) <= window)
    want = [seen[a:b].sum(1).mean() for a, b in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(keys_seen(edges, n, causal, window), want)


# ---------------------------------------------------------------- which maps share a scale


def spread(decades: float, seed: int = 0) -> torch.Tensor:
    """A 32 x 32 map whose values span `decades` below 1e-3, in random order."""
    g = torch.Generator().manual_seed(seed)
    return 10 ** (-3 - decades * torch.rand(32, 32, generator=g, dtype=torch.float64))


def test_maps_of_similar_range_share_one_scale():
    mats = {"dense": spread(3.0), "lsh": spread(2.5, seed=1)}
    groups = fit_scales(mats, "mean", "log")
    assert [names for names, _ in groups] == [("dense", "lsh")]
    assert groups[0][1] == fit_scale(list(mats.values()), "mean", "log") and describe(groups) == ""


def test_a_signed_map_gets_its_own_signed_scale_and_the_others_keep_log():
    signed = torch.linspace(-0.03, 0.03, 32 * 32, dtype=torch.float64).reshape(32, 32)
    mats = {"dense": spread(3.0), "lowrank": signed, "lsh": spread(2.5, seed=1)}
    groups = fit_scales(mats, "mean", "log", diverging=True)
    assert [names for names, _ in groups] == [("dense", "lsh"), ("lowrank",)]
    shared, alone = groups[0][1], groups[1][1]
    assert shared.mode == "log" and alone.signed and (alone.zmin, alone.zmax) == (pytest.approx(-0.03),
                                                                                  pytest.approx(0.03))
    assert "Low-rank" in describe(groups) and "±0.03" in describe(groups)


def test_a_map_that_would_fill_little_of_the_shared_range_gets_its_own():
    narrow = spread(0.5) * 1e-4  # half a decade, far below the others
    mats = {"dense": narrow, "lsh": spread(3.0), "segmented": spread(2.8, seed=2)}
    groups = fit_scales(mats, "mean", "log")
    assert [names for names, _ in groups] == [("dense",), ("lsh", "segmented")]
    own, shared = groups[0][1], groups[1][1]
    z = transform(narrow, "log", list(range(33)))
    assert own.zmin >= z.min() - 1e-9 and own.zmax == pytest.approx(z.max())  # its own range, not the others'
    assert own.width < MIN_SHARE * shared.width and shared.width > 2.5
    assert describe(groups).count("decades") == 2


def test_every_map_filling_too_little_of_one_range_stands_alone():
    mats = {"a": spread(0.3), "b": spread(0.3) * 1e-5}  # each fills under a tenth of the range they would share
    assert [names for names, _ in fit_scales(mats, "mean", "log")] == [("a",), ("b",)]
