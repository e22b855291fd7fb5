"""What the download buttons carry: pooled maps as NPZ, per-token series as CSV."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch


def map_npz(m) -> bytes:
    """A pooled map as NPZ: mean and max per bin, and the token edges of the bins."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mean=m.mean.numpy(), max=m.max.numpy(), row_edges=np.array(m.row_edges),
                        col_edges=np.array(m.col_edges))
    return buffer.getvalue()


def series_csv(series: dict, positions=None) -> str:
    """Per-token series (as drawn along the text) as CSV, one column each."""
    frame = pd.DataFrame({name: torch.as_tensor(v).cpu().numpy() for name, v in series.items()})
    frame.insert(0, "position", positions if positions is not None else range(len(frame)))
    return frame.to_csv(index=False)
