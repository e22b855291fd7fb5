"""Side-by-side numbers: a fidelity table across mechanisms and a mechanism x head overview."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch

from explorer.doc import Doc
from explorer.mechanisms import REGISTRY
from explorer.metrics import Fidelity, fidelity

COLUMNS = {"rel_error": "output rel. error", "tv": "total variation", "recall": "top-k recall",
           "reach_mass": "reachable dense mass", "entropy_delta": "entropy change"}


def table_row(name: str, fid: Fidelity, cost: dict) -> dict:
    """One mechanism's line: mean of each fidelity metric, cost against dense, measured time."""
    row = {"mechanism": name}
    row.update({label: float(getattr(fid, key).mean()) for key, label in COLUMNS.items()})
    row["FLOPs vs dense"] = cost["flops"] / cost["dense_flops"]
    row["bytes vs dense"] = cost["bytes"] / cost["dense_bytes"]
    row["seconds"] = cost["seconds"]
    return row


def fidelity_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index("mechanism")


def heads_overview(doc: Doc, mechanisms: dict[str, dict], metric: str = "tv", max_rows: int = 256,
                   progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Mean `metric` for every (mechanism, head) of the layer: where does a mechanism fail?

    mechanisms maps registry keys to their parameters; rows are measured on an
    evenly spaced sample of max_rows queries per head.
    """
    if metric not in COLUMNS:
        raise ValueError(f"metric={metric!r} must be one of {list(COLUMNS)}")
    unknown = set(mechanisms) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown mechanism(s) {sorted(unknown)}; known: {list(REGISTRY)}")
    values = torch.empty(len(mechanisms), doc.heads)
    total, done = len(mechanisms) * doc.heads, 0
    for h in range(doc.heads):
        q, k, v = doc.head(h)
        for i, (key, params) in enumerate(mechanisms.items()):
            res = REGISTRY[key].run(q, k, v, **params)
            values[i, h] = getattr(fidelity(q, k, v, res, causal=doc.causal, max_rows=max_rows), metric).mean()
            done += 1
            if progress:
                progress(done, total)
    return pd.DataFrame(values.numpy(), index=list(mechanisms), columns=[f"head {h}" for h in range(doc.heads)])
