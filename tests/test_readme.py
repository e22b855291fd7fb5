"""The README's notebook example runs as written (on a sample text saved as paper.txt)."""
import re

import pandas as pd
from conftest import ROOT, SHORT_SAMPLE


def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    from explorer.core.samples import load_sample

    code = re.search(r"## In a notebook\s+```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "paper.txt").write_text(load_sample(SHORT_SAMPLE), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "total variation" in printed and all(k in printed for k in ("lsh", "lowrank", "segmented"))
    table = namespace["fidelity_table"]([namespace["table_row"](k, namespace["fidelity"](
        *namespace["doc"].head(5), r), r.cost) for k, r in namespace["runs"].items()])
    assert isinstance(table, pd.DataFrame) and table["top-k recall"].between(0, 1).all()
