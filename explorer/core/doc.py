"""The encoded document every mechanism and page works on."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Doc:
    """Tokens of a text with the queries, keys and values of one layer.

    q, k, v are [heads, n, head_dim]; offsets are character spans in `text`
    ((0, 0) for special tokens the model adds). `causal` says whether the
    model's own attention is masked to the past.
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    model: str = "synthetic"
    layer: int = 0
    causal: bool = False
    windows: list[tuple[int, int]] = field(default_factory=list)
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    needles: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.q.shape[1]

    @property
    def heads(self) -> int:
        return self.q.shape[0]

    @property
    def head_dim(self) -> int:
        return self.q.shape[2]

    def head(self, h: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of one head, kept 3-D ([1, n, head_dim]) for mechanisms."""
        if not 0 <= h < self.heads:
            raise ValueError(f"head {h} is out of range 0..{self.heads - 1}")
        return self.q[h : h + 1], self.k[h : h + 1], self.v[h : h + 1]

    def first_content(self) -> int:
        """The first token that carries content (a letter or a digit of the text), 0 if none does:
        where an inspector starts, rather than on [CLS] or the "#" of a title."""
        for i, (a, b) in enumerate(self.offsets):
            if any(c.isalnum() for c in self.text[a:b]):
                return i
        return 0

    def matches(self, word: str) -> list[int]:
        """Tokens whose text contains `word` (case folded), in text order."""
        needle = word.strip().casefold()
        if not needle:
            return []
        return [i for i, (a, b) in enumerate(self.offsets) if b > a and needle in self.text[a:b].casefold()]
