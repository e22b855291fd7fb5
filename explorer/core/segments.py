"""Cut a token sequence into contiguous segments, and pool over them.

A segmentation is a 1-D LongTensor of segment START token indices: strictly
increasing, first 0, all < n; segment s covers tokens starts[s] .. starts[s+1]-1
(the last one runs to n - 1). Mechanisms take it as their `boundaries` param.

Three ways to get one:
- `fixed(n, length)`: every `length` tokens (the last segment may be shorter).
- `by_structure(text, offsets, "sentences" | "paragraphs")`: from the text's own
  structure, through the tokens' character offsets. Special tokens the model
  adds (empty offsets) join the segment of the token before them.
- `split_long(starts, n, max_length)`: cap the length of structural segments.
- `by_mode(...)`: one of MODES, as the pages offer them.

Sentence ends are ., !, ? or an ellipsis (optionally followed by closing quotes
or brackets), then whitespace, then a character that is not a lower-case letter
(so "e.g. the" does not split); paragraph breaks are also sentence breaks.
Paragraphs are separated by blank lines; a text with no blank line at all is
split at single line breaks instead.
"""
from __future__ import annotations

import bisect
import re
from typing import Sequence

import torch

UNITS = ("sentences", "paragraphs")
MODES = ("fixed length",) + UNITS

_SENTENCE = re.compile(r"(?:[.!?]|\u2026)[\"'\u201d\u2019)\]]*\s+(?=[^\sa-z])")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
_LINE = re.compile(r"\n\s*")


def fixed(n: int, length: int, device=None) -> torch.Tensor:
    """Starts of consecutive segments of `length` tokens (clamped to n)."""
    if n < 1 or length < 1:
        raise ValueError(f"fixed segments need n >= 1 and length >= 1, got n={n}, length={length}")
    return torch.arange(0, n, length, device=device)


def check(boundaries, n: int, name: str = "boundaries", device=None) -> torch.Tensor:
    """Validate segment starts for n tokens and return them as a LongTensor on `device`."""
    try:
        starts = torch.as_tensor(boundaries, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"parameter {name}: not a sequence of token indices ({err})") from err
    if starts.dim() != 1 or starts.numel() == 0:
        raise ValueError(f"parameter {name} must be a non-empty 1-D sequence of segment starts, "
                         f"got shape {tuple(starts.shape)}")
    if starts.is_floating_point() or starts.is_complex() or starts.dtype == torch.bool:
        raise ValueError(f"parameter {name} must hold integer token indices, got {starts.dtype}")
    starts = starts.long()
    if int(starts[0]) != 0:
        raise ValueError(f"parameter {name} must start at 0 (the first segment's start), got {int(starts[0])}")
    if int(starts[-1]) >= n:
        raise ValueError(f"parameter {name}={int(starts[-1])} is out of range [0, {n - 1}] for n={n}")
    if starts.numel() > 1 and not bool((starts[1:] > starts[:-1]).all()):
        raise ValueError(f"parameter {name} must be strictly increasing segment starts")
    return starts


def ends(starts: torch.Tensor, n: int) -> torch.Tensor:
    """One past the last token of every segment."""
    return torch.cat([starts[1:], starts.new_tensor([n])])


def sizes(starts: torch.Tensor, n: int) -> torch.Tensor:
    return ends(starts, n) - starts


def ids(starts: torch.Tensor, n: int) -> torch.Tensor:
    """Segment index of every token, [n]."""
    return torch.searchsorted(starts, torch.arange(n, device=starts.device), right=True) - 1


def pool_mean(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Mean of x [heads, n, d] over each segment: [heads, segments, d]."""
    n = x.shape[1]
    total = torch.zeros(x.shape[0], starts.numel(), x.shape[2], device=x.device, dtype=x.dtype)
    total.index_add_(1, ids(starts, n), x)
    return total / sizes(starts, n).to(x.dtype)[None, :, None]


def split_long(starts: torch.Tensor, n: int, max_length: int) -> torch.Tensor:
    """Split every segment longer than max_length into pieces of max_length (the last shorter)."""
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be at least 1")
    pieces = [torch.arange(int(a), int(b), max_length) for a, b in zip(starts.tolist(), ends(starts, n).tolist())]
    return torch.cat(pieces).to(starts.device)


def _break_chars(text: str, unit: str) -> list[int]:
    """Character positions where a new unit begins (the first character after the break)."""
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} must be one of {list(UNITS)}")
    lines = _BLANK_LINE if _BLANK_LINE.search(text) else _LINE
    found = {m.end() for m in lines.finditer(text)}
    if unit == "sentences":
        found |= {m.end() for m in _SENTENCE.finditer(text)}
    return sorted(found)


def by_structure(text: str, offsets: Sequence[tuple[int, int]], unit: str = "sentences",
                 device=None) -> torch.Tensor:
    """Segment starts at the text's sentence or paragraph breaks, through token offsets.

    A new segment starts at the first real token (non-empty offset) that begins
    at or after a break character. Segments are never empty; n = len(offsets).
    """
    n = len(offsets)
    if n < 1:
        raise ValueError("offsets is empty: there are no tokens to segment")
    real = [i for i, (a, b) in enumerate(offsets) if b > a]
    real_starts = [offsets[i][0] for i in real]
    starts = {0}
    for c in _break_chars(text, unit):
        j = bisect.bisect_left(real_starts, c)
        if j < len(real):
            starts.add(real[j])
    return torch.tensor(sorted(starts), dtype=torch.long, device=device)


def char_spans(starts: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character span (first start, last end) of each segment over its real tokens; (0, 0) if none."""
    n = len(offsets)
    spans = []
    for a, b in zip(starts.tolist(), ends(starts, n).tolist()):
        real = [offsets[i] for i in range(a, b) if offsets[i][1] > offsets[i][0]]
        spans.append((real[0][0], real[-1][1]) if real else (0, 0))
    return spans


def by_mode(mode: str, n: int, length: int, text: str = "", offsets: Sequence[tuple[int, int]] = (),
            split: bool = True, device=None) -> torch.Tensor:
    """Starts for a mode of MODES: fixed segments of `length`, or sentences / paragraphs
    (split to at most `length` tokens when `split`)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {list(MODES)}")
    if mode == MODES[0]:
        return fixed(n, length, device)
    if len(offsets) != n:
        raise ValueError(f"{len(offsets)} offsets for n={n} tokens: they must match")
    starts = by_structure(text, offsets, mode, device)
    return split_long(starts, n, length) if split else starts
