"""The model view: every per-head statistic against a brute-force NumPy computation of the dense
attention matrix, the mechanism's output error against NumPy's dense output, and the table's layout."""
import io

import numpy as np
import pandas as pd
import pytest
import torch

import explorer
from explorer.analysis.model_view import COLUMNS, HALF_EVERY, bench_line, layer_stats, model_view
from explorer.core.encoding import encode_layers
from explorer.mechanisms import REGISTRY


def _brute(doc, rows, local, causal):
    """name -> [heads, len(rows)] from the full n x n softmax in float64."""
    q, k, v = (x.double().numpy() for x in (doc.q, doc.k, doc.v))
    n = q.shape[1]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[2])
    if causal:
        s = np.where(np.arange(n)[None, None] > np.arange(n)[None, :, None], -np.inf, s)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = (a / a.sum(-1, keepdims=True))[:, rows]
    seen = rows + 1 if causal else np.full(len(rows), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(a > 0, a * np.log(a), 0).sum(-1) / np.log(seen)
    gap = np.abs(rows[:, None] - np.arange(n)[None])
    half = (np.cumsum(-np.sort(-a, axis=-1), axis=-1) < 0.5).sum(-1) + 1  # heaviest keys first, until half is held
    return {"entropy": np.where(seen > 1, entropy, np.nan), "first_mass": a[..., 0],
            "local_mass": (a * (gap <= local)).sum(-1), "distance": (a * gap).sum(-1), "half_keys": half,
            "output": a @ v}


@pytest.mark.parametrize("causal", [False, True])
def test_every_statistic_matches_brute_force(causal, reduced):
    doc = explorer.synthetic(60, heads=3, head_dim=8, seed=1)
    doc.causal = causal
    rows = torch.tensor([0, 1, 7, 30, 52, 59])
    mech, params = REGISTRY["segmented"], {"segment_length": 16, "causal": causal}
    got = layer_stats(doc, rows, local=4, mechanism=mech, params=params)
    ref = _brute(doc, rows.numpy(), 4, causal)
    for name in ("entropy", "first_mass", "local_mass", "distance"):
        np.testing.assert_allclose(got[name].numpy(), np.nanmean(ref[name], axis=1), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    sorted_rows = ref["half_keys"][:, ::HALF_EVERY]  # the rows it sorts (one chunk here)
    np.testing.assert_allclose(got["half_keys"].numpy(), sorted_rows.mean(1), rtol=1e-6)
    mine = mech.run(doc.q, doc.k, doc.v, **params).output.double().numpy()[:, rows]
    rel = np.linalg.norm(mine - ref["output"], axis=-1) / np.linalg.norm(ref["output"], axis=-1)
    np.testing.assert_allclose(got["rel_error"].numpy(), rel.mean(1), rtol=1e-4, atol=1e-6)


def test_dense_as_the_mechanism_has_no_error():
    doc = explorer.synthetic(50, heads=2, head_dim=8, seed=2)
    got = layer_stats(doc, torch.arange(50), mechanism=REGISTRY["dense"], params={})
    assert float(got["rel_error"].max()) < 1e-5


def test_table_has_a_line_per_layer_and_head_and_reads_back_from_csv():
    capture = encode_layers("A field guide to reading long documents. " * 30, window=64, stride=48)
    calls = []
    frame = model_view(capture, queries=40, local=3, mechanism=REGISTRY["lowrank"], params={},
                       progress=lambda done, total: calls.append((done, total)))
    measured = [c for c in COLUMNS if c != "retrieval"]  # retrieval: joined by the page once the Needle probe ran
    assert list(frame.columns) == ["layer", "head", "queries", "local_window", *measured, "mechanism"]
    assert len(frame) == 6 * 12 and set(frame.layer) == set(range(6)) and (frame.queries == 40).all()
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert frame.entropy.between(0, 1.0001).all() and frame.first_mass.between(0, 1).all()
    assert frame.local_mass.between(0, 1.0001).all() and (frame.distance >= 0).all()
    back = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    one = layer_stats(capture.doc(3), torch.linspace(0, capture.doc(3).n - 1, 40).round().long().unique(), 3)
    np.testing.assert_allclose(frame[frame.layer == 3].entropy.to_numpy(), one["entropy"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [(dict(queries=0), "queries"), (dict(local=-1), "local"),
                                          (dict(mechanism=REGISTRY["lsh"], params={"bucket": 3}), "unknown")])
def test_bad_settings_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model_view([explorer.synthetic(20)], **kwargs)


def test_bench_line_times_the_pass_and_the_statistics_apart():
    line = bench_line("Two short sentences. The model reads them once.", queries=8)
    assert (line["layers"], line["heads"], line["queries"], line["mechanism"]) == (6, 12, 8, "")
    assert line["tokens"] > 8 and line["forward_s"] >= 0 and line["stats_s"] >= 0


def test_small_shares_still_show_which_head_gives_more():
    from explorer.figures.model_view import head_grid

    frame = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "entropy": [0.9, 0.8, 0.7, 0.95],
                          "first_mass": [0.01, 0.04, 0.002, 0.03]})
    fig = head_grid(frame, ["entropy", "first_mass"])
    entropy, first = (t.marker for t in fig.data)
    assert (entropy.cmin, entropy.cmax) == (0.0, 1.0)
    assert (first.cmin, first.cmax) == (0.0, 0.04)  # from 0 to the largest head's share, not to 1


def test_a_position_bias_shapes_every_statistic():
    """row_stats by a rule with ALiBi: the closed form softmax(q.k / sqrt(d) + slope * (j - i)), causal."""
    from explorer.analysis.model_view import row_stats
    from explorer.core.bias import ALiBi

    doc = explorer.synthetic(60, heads=2, head_dim=8, seed=3)
    rule = explorer.AttentionRule(8**-0.5, True, bias=ALiBi((0.5, 0.125)))
    rows = torch.tensor([1, 7, 59])
    got = row_stats(doc.q, doc.k, doc.v, rows, rule, local=4)
    i, j = rows[:, None], torch.arange(60)[None]
    s = doc.q[:, rows] @ doc.k.transpose(1, 2) * 8**-0.5 + torch.tensor([0.5, 0.125])[:, None, None] * (j - i)
    a = torch.softmax(s.masked_fill(j > i, float("-inf")), -1)
    entropy = -torch.special.xlogy(a, a).sum(-1) / (rows + 1).log()
    torch.testing.assert_close(got["entropy"], entropy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["distance"], (a * (i - j).abs()).sum(-1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["output"], a @ doc.v, atol=1e-5, rtol=1e-4)
