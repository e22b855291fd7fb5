"""The fidelity table and the mechanism x head overview against per-head measurements."""
import pytest
import torch

import explorer
from explorer.analysis.compare import fidelity_table, heads_overview, table_row
from explorer.analysis.fidelity import fidelities, fidelity
from explorer.mechanisms import REGISTRY


def test_fidelities_share_dense_and_equal_single_measurements():
    d = explorer.synthetic(90, heads=2, seed=4)
    runs = {key: REGISTRY[key].run(d.q, d.k, d.v) for key in ("segmented", "memory")}
    together = fidelities(d.q, d.k, d.v, runs, chunk=16)
    for key, res in runs.items():
        alone = fidelity(d.q, d.k, d.v, res, chunk=16)
        for metric in alone.METRICS:
            torch.testing.assert_close(getattr(together[key], metric), getattr(alone, metric))


def test_heads_overview_matches_each_head_measured_alone():
    d = explorer.synthetic(120, heads=3, seed=2)
    mechanisms = {"dense": {}, "segmented": {"segment_length": 16}}
    table = heads_overview(d, mechanisms, metric="tv", max_rows=64)
    assert table.shape == (2, 3)
    assert float(table.loc["dense"].abs().max()) < 1e-5
    for h in range(3):
        q, k, v = d.head(h)
        res = REGISTRY["segmented"].run(q, k, v, segment_length=16)
        assert table.loc["segmented", f"head {h}"] == pytest.approx(float(fidelity(q, k, v, res, max_rows=64).tv.mean()),
                                                                   rel=1e-5)
    with pytest.raises(ValueError, match="metric"):
        heads_overview(d, mechanisms, metric="speed")
    with pytest.raises(ValueError, match="unknown mechanism"):
        heads_overview(d, {"nope": {}})


def test_table_row_reports_means_and_cost_ratios():
    d = explorer.synthetic(64, heads=1)
    res = REGISTRY["segmented"].run(d.q, d.k, d.v, segment_length=8)
    fid = fidelity(d.q, d.k, d.v, res)
    table = fidelity_table([table_row("segmented", fid, res.cost)])
    assert table.loc["segmented", "total variation"] == pytest.approx(float(fid.tv.mean()))
    assert table.loc["segmented", "FLOPs vs dense"] == pytest.approx(res.cost["flops"] / res.cost["dense_flops"])
    assert 0 < table.loc["segmented", "FLOPs vs dense"] < 1
