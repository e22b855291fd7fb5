"""Side-by-side numbers: a fidelity table across mechanisms and a mechanism x head overview."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch

from explorer.analysis.fidelity import Fidelity, fidelities
from explorer.core.doc import Doc
from explorer.mechanisms import REGISTRY

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
    results = {}
    for i, (key, params) in enumerate(mechanisms.items()):  # all heads of the layer in one run
        results[key] = REGISTRY[key].run(doc.q, doc.k, doc.v, **params)
        if progress:
            progress(i + 1, len(mechanisms) + 1)
    measured = fidelities(doc.q, doc.k, doc.v, results, causal=doc.causal, max_rows=max_rows)
    if progress:
        progress(len(mechanisms) + 1, len(mechanisms) + 1)
    values = torch.stack([getattr(measured[key], metric).mean(dim=1) for key in mechanisms])
    return pd.DataFrame(values.numpy(), index=list(mechanisms), columns=[f"head {h}" for h in range(doc.heads)])
