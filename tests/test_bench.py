"""`python -m explorer.bench --synthetic` runs without the model and writes every step to --json."""
import json

import torch

from explorer import bench
from explorer.core.rows import sample_rows
from explorer.core.stats import attention_stats


def test_synthetic_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    bench.main(["--synthetic", "--n", "70", "--mechanisms", "segmented", "--repeat", "2", "--preview", "16",
                "--json", str(path)])
    kernel, *rows = json.loads(path.read_text())
    assert kernel["kernel"]["available"] and kernel["kernel"]["seconds"] >= 0  # its build, timed apart
    assert [(r["scope"], r["heads"], r["n"]) for r in rows] == [("one head", 1, 70), ("all heads", 12, 70)]
    one, every = (r["steps"] for r in rows)
    assert {"sdpa", "sdpa 3-D (math)", "stats exact", "stats exact, eager", "stats exact, ALiBi",
            "stats exact, MPNet buckets", "stats fused", "fused: kernel only", "stats preview 16",
            "reference_stats", "segmented", "segmented+summaries", "progressive: to preview",
            "progressive: to exact"} == set(one)
    assert "reference_stats" not in every
    for step in one.values():
        assert step["first_s"] > 0 and step["s"] > 0 and step["cpu_s"] >= 0 and step["peak_bytes"] >= 0
    assert "stats exact" in capsys.readouterr().out


def test_the_progressive_step_is_the_preview_then_the_exact_pass():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 300, 8) for _ in range(3))
    first = bench._progressive(q, k, v, 40, to_preview=True)
    last = bench._progressive(q, k, v, 40, to_preview=False)
    assert set(sample_rows(300, 40).tolist()) <= set(first.rows.tolist()) and first.rows.numel() < 300
    assert last.rows is None
    torch.testing.assert_close(last.lse, attention_stats(q, k, v).lse)
