"""The colour scale maps share (explorer.figures.scale), against hand-computed ranges."""
import math

import pytest
import torch

from explorer.figures.scale import DECADES, fit_scale, log_range


def test_log_range_runs_from_the_top_down_to_the_first_percentile():
    values = torch.logspace(-3, 0, 101)  # 1e-3 .. 1, evenly in log
    low, top = log_range([values])
    assert top == pytest.approx(0.0)
    assert low == pytest.approx(math.log10(float(torch.quantile(values, 0.01))), abs=1e-6)


def test_log_range_never_reaches_more_than_six_decades_down():
    values = torch.tensor([1e-20] * 50 + [0.5] * 50)
    low, top = log_range([values])
    assert top == pytest.approx(math.log10(0.5)) and low == pytest.approx(top - DECADES)


def test_maps_share_one_range_and_zeros_are_left_out():
    a, b = torch.tensor([0.0, 0.2, 0.1]), torch.tensor([0.0, 0.0, 0.8])
    scale = fit_scale([a, b], "mean", log=True)
    positive = torch.tensor([0.2, 0.1, 0.8])
    assert scale.zmax == pytest.approx(math.log10(0.8), abs=1e-6)
    assert scale.zmin == pytest.approx(math.log10(float(torch.quantile(positive, 0.01))), abs=1e-6)
    linear = fit_scale([a, b], "max", log=False)
    assert (linear.zmin, linear.zmax, linear.pool, linear.log) == (0.0, pytest.approx(0.8), "max", False)


def test_signed_weights_get_a_scale_centred_on_zero_only_when_asked():
    signed = torch.tensor([-0.3, 0.5])
    assert fit_scale([signed], "mean", log=True, diverging=True).signed
    assert not fit_scale([torch.tensor([0.1, 0.5])], "mean", log=True, diverging=True).signed
    assert fit_scale([torch.zeros(4)], "mean", log=True).zmin == -12.0
