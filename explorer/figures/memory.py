"""Charts of the recurrent-memory page: the segment timeline with each segment's
reach, a query's reach over the text with its compressed slots, and the
table of slots with the text each one summarizes.

Dense attention by region along the text uses
common.along_text(stacked=True); lookback uses common.along_text.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from explorer.analysis.memory import REGIONS, region_bounds
from explorer.figures import common
from explorer.figures.colours import SERIES
from explorer.figures.common import as_array, span_text, strips
from explorer.mechanisms.memory import MemoryStructure


def shown_segments(structure: MemoryStructure, rows: tuple[int, int], most: int) -> list[int]:
    """Segments whose queries meet the row window, at most `most` of them evenly spaced."""
    seg = structure.segments
    hit = ((seg[:, 0] < rows[1]) & (seg[:, 1] > rows[0])).nonzero().flatten()
    if len(hit) > most:
        hit = hit[torch.linspace(0, len(hit) - 1, most).round().long().unique()]
    return hit.tolist()


def segment_timeline(structure: MemoryStructure, tokens: list[str], rows: tuple[int, int] | None = None,
                     cols: tuple[int, int] | None = None, most: int = 80) -> go.Figure:
    """One line per segment: the keys it reaches as compressed slots, memory and itself, over the text.

    rows limits the segments to those holding queries in that window, cols the key axis.
    """
    n = len(tokens)
    rows, cols = rows or (0, n), cols or (0, n)
    picked = shown_segments(structure, rows, most)
    labels = [f"segment {s}" for s in picked]
    fig = go.Figure()
    kinds = (("compressed", structure.compressed, SERIES[4]), ("memory", structure.memory, SERIES[1]),
             ("segment", structure.segments, SERIES[0]))
    for name, every, colour in kinds:
        spans = every[picked] if picked else torch.zeros(0, 2, dtype=torch.long)
        start, stop = spans[:, 0].numpy(), spans[:, 1].numpy()
        text = [f"{name}: tokens {a}–{b - 1} │ {span_text(tokens, a, b)}" if b > a else f"{name}: none"
                for a, b in zip(start.tolist(), stop.tolist())]
        fig.add_trace(go.Bar(y=labels, x=stop - start, base=start, orientation="h", name=name,
                             marker={"color": colour}, customdata=text,
                             hovertemplate="%{y}<br>%{customdata}<extra></extra>"))
    total = len(shown_segments(structure, rows, 10**9))
    note = "" if total == len(picked) else f" ({len(picked)} of {total} segments shown, evenly spaced)"
    fig.update_layout(title="Segments and what each one reaches" + note, barmode="overlay",
                      height=min(700, 120 + 14 * max(1, len(picked))), margin={"l": 90, "r": 10, "t": 40, "b": 40},
                      xaxis={"title": "key position", "range": list(cols)},
                      yaxis={"autorange": "reversed", "type": "category"})
    return common.legend_below(fig)


def region_ids(structure: MemoryStructure, query: int, n: int) -> torch.Tensor:
    """REGIONS index (0 older .. 4 later) of every key, seen from one query."""
    cuts = region_bounds(structure, torch.tensor([query]), n)[0]
    return torch.bucketize(torch.arange(n), cuts[1:5], right=True)


def slot_ids(structure: MemoryStructure, segment: int, n: int) -> torch.Tensor:
    """Index of the compressed slot each token belongs to for this segment, -1 outside them."""
    ids = torch.full((n,), -1, dtype=torch.long)
    first, last = structure.segment_slots[segment].tolist()
    for i, (a, b) in enumerate(structure.slot_spans[first:last].tolist(), start=first):
        ids[a:b] = i
    return ids


def query_reach(structure: MemoryStructure, tokens: list[str], query: int) -> go.Figure:
    """Two strips over the text for one query: the region of every key, and its segment's compressed slots."""
    n = len(tokens)
    segment = query // structure.segment
    regions = region_ids(structure, query, n)
    slots = slot_ids(structure, segment, n)
    shade = torch.where(slots >= 0, slots % 2 + 1, torch.zeros_like(slots))  # alternate so neighbours differ
    return strips(torch.stack([regions, shade]), tokens, ["reach", "slots"],
                  title=f"What query {query} reaches: " + ", ".join(f"{i} {r}" for i, r in enumerate(REGIONS)))


def slot_table(structure: MemoryStructure, tokens: list[str], segment: int, weights=None) -> pd.DataFrame:
    """The compressed slots segment `segment` sees: tokens each averages, their text, and the query's weight."""
    first, last = structure.segment_slots[segment].tolist()
    w = None if weights is None else as_array(weights)
    rows = []
    for i, (a, b) in enumerate(structure.slot_spans[first:last].tolist(), start=first):
        row = {"slot": i, "tokens": f"{a}–{b - 1}", "size": b - a, "summarizes": span_text(tokens, a, b, 80)}
        if w is not None:
            row["weight"] = float(w[a:b].sum())
        rows.append(row)
    return pd.DataFrame(rows)
