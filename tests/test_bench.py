"""`python -m explorer.bench --synthetic` runs without the model and writes every step to --json."""
import json

from explorer import bench


def test_synthetic_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    bench.main(["--synthetic", "--n", "70", "--mechanisms", "segmented", "--repeat", "2", "--preview", "16",
                "--json", str(path)])
    rows = json.loads(path.read_text())
    assert [(r["scope"], r["heads"], r["n"]) for r in rows] == [("one head", 1, 70), ("all heads", 12, 70)]
    one, every = (r["steps"] for r in rows)
    assert {"sdpa", "sdpa 3-D (math)", "stats exact", "stats preview 16", "reference_stats", "segmented",
            "segmented+summaries"} == set(one)
    assert "reference_stats" not in every
    for step in one.values():
        assert step["first_s"] > 0 and step["s"] > 0 and step["peak_bytes"] >= 0
    assert "stats exact" in capsys.readouterr().out
