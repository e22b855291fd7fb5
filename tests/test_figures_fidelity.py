"""Fidelity along the text (explorer.figures.fidelity): each line is the mean of its runs of
neighbouring measured queries and each band their 10th to 90th percentile, recomputed here from the
raw per-query values; the runs cover every query once, in order; legends name mechanisms."""
import numpy as np
import pytest

import explorer
from explorer.analysis.fidelity import fidelities
from explorer.figures import colours
from explorer.figures.fidelity import MEASURES, along_text
from explorer.mechanisms import REGISTRY

N = 1200


@pytest.fixture(scope="module")
def fids():
    doc = explorer.synthetic(N, heads=1, head_dim=16, seed=3)
    results = {"lsh": REGISTRY["lsh"].run(doc.q, doc.k, doc.v, n_buckets=8),
               "segmented": REGISTRY["segmented"].run(doc.q, doc.k, doc.v, segment_length=256)}
    return fidelities(doc.q, doc.k, doc.v, results, max_rows=600)


def lines(fig, panel: int) -> dict:
    axis = "y" if panel == 1 else f"y{panel}"
    return {t.name: t for t in fig.data if t.yaxis == axis and t.mode == "lines" and t.fill != "toself"}


def test_each_line_is_the_mean_and_band_of_its_runs_of_queries(fids):
    tokens = [f"t{i}" for i in range(N)]
    fig = along_text(fids, tokens, points=40)
    for panel, measure in enumerate(MEASURES, start=1):
        drawn = lines(fig, panel)
        assert set(drawn) == {REGISTRY[k].title for k in fids}  # titles, never registry keys
        for key, fid in fids.items():
            line = drawn[REGISTRY[key].title]
            assert line.line.color == colours.colour_of(key)
            values, rows = getattr(fid, measure)[0].numpy(), fid.rows.numpy()
            sizes = np.asarray(line.customdata)[:, 2].astype(int)
            assert sizes.sum() == len(values) == 600 and len(sizes) == 40 and sizes.min() >= 1
            runs = np.split(np.arange(len(values)), np.cumsum(sizes)[:-1])
            np.testing.assert_allclose(line.y, [values[r].mean() for r in runs], rtol=1e-6)
            np.testing.assert_allclose(np.asarray(line.customdata)[:, :2],
                                       [np.percentile(values[r], (10, 90)) for r in runs], rtol=1e-6)
            np.testing.assert_allclose(line.x, [rows[r].mean() for r in runs])
            # a run's hover names its tokens: from its first query to the next run's, the last to the text's end
            assert line.text[1].startswith(f"{rows[runs[1][0]]}–{rows[runs[2][0]] - 1} ")
            assert line.text[-1].startswith(f"{rows[runs[-1][0]]}–{N - 1} ")


def test_a_run_of_one_query_draws_its_value_and_no_band(fids):
    fig = along_text({"lsh": fids["lsh"]}, [f"t{i}" for i in range(N)], points=5000)
    line = lines(fig, 1)[REGISTRY["lsh"].title]
    np.testing.assert_allclose(line.y, fids["lsh"].tv[0].numpy(), rtol=1e-6)
    assert not any(t.fill for t in fig.data) and not fig.layout.showlegend  # one mechanism: no legend
