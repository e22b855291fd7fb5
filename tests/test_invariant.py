"""The design's one invariant, for every registered mechanism at its defaults and
over random sizes: weights(rows) @ v == output[:, rows], weights over the original keys.
Each mechanism's own test file sweeps its parameters; this one guards the registry."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.mechanisms import DENSE, REGISTRY


def test_registry_holds_the_contract_keys_dense_first():
    assert list(REGISTRY)[0] == DENSE == "dense"
    assert {"lsh", "lowrank", "segmented", "hierarchical", "memory", "routing", "relpos"} <= set(REGISTRY)
    assert all(mech.key == key and mech.title and mech.summary for key, mech in REGISTRY.items())


@pytest.mark.parametrize("key", list(REGISTRY))
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 70), heads=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_weights_times_v_is_the_output(key, n, heads, seed):
    d = explorer.synthetic(n, heads=heads, head_dim=8, seed=seed)
    res = REGISTRY[key].run(d.q, d.k, d.v)
    assert res.output.shape == d.v.shape
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, 9)]
    w = res.weights(rows)
    assert w.shape == (heads, rows.numel(), n)
    scale = res.output.abs().max().clamp_min(1.0)
    torch.testing.assert_close(w @ d.v, res.output[:, rows], atol=1e-4 * scale, rtol=1e-4)
    assert {"flops", "bytes", "seconds", "dense_flops", "dense_bytes"} <= set(res.cost)


@pytest.mark.parametrize("key", list(REGISTRY))
def test_every_parameter_rejects_a_wrong_type(key):
    d = explorer.synthetic(16, heads=1)
    for p in REGISTRY[key].params:
        if p.default is None:
            continue
        with pytest.raises(ValueError, match=p.name):
            REGISTRY[key].run(d.q, d.k, d.v, **{p.name: object()})


@pytest.mark.parametrize("key", list(REGISTRY))
def test_float64_is_computed_in_float64_and_agrees_with_float32(key):
    d = explorer.synthetic(40, heads=2, head_dim=8, seed=5)
    q, k, v = (x.double() for x in (d.q, d.k, d.v))
    res = REGISTRY[key].run(q, k, v)
    assert res.output.dtype == torch.float64
    rows = torch.arange(0, 40, 3)
    torch.testing.assert_close(res.weights(rows) @ v, res.output[:, rows], atol=1e-10, rtol=1e-10)
    single = REGISTRY[key].run(d.q, d.k, d.v)
    torch.testing.assert_close(res.output.float(), single.output, atol=1e-5, rtol=1e-4)
