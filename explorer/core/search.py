"""Places in a text as token ranges: a phrase, a line number or a character offset, for a person
who looks for "Corresponding Source" rather than for the tokens a tokenizer cut it into."""
from __future__ import annotations

import bisect
import re

MAX_MATCHES = 10_000  # places one search reports (a common word in a 129k-token text stays well under)
_ADDRESS = re.compile(r"\s*(line|char)\s*:\s*(\d+)\s*", re.IGNORECASE)
_VISIBLE = str.maketrans({" ": "·", "\u00a0": "·", "\n": "↵", "\r": "", "\t": "→"})


def visible(text: str) -> str:
    """Whitespace made visible: · a space, ↵ a newline, → a tab (a carriage return dropped)."""
    return text.translate(_VISIBLE)


def find(text: str, offsets: list[tuple[int, int]], query: str) -> list[tuple[int, int]]:
    """Token ranges [start, stop) of the places `query` names, in text order:
    "line:N" the tokens of line N (from 1), "char:N" the token at character N (from 0), anything
    else a phrase, found case-folded wherever it occurs (across token boundaries, any run of
    whitespace matching the spaces between its words), at most
    MAX_MATCHES of them. Tokens without text (the model's special ones) are never part of a match."""
    tokens = [i for i, (a, b) in enumerate(offsets) if b > a]
    ends = [offsets[i][1] for i in tokens]
    starts = [offsets[i][0] for i in tokens]

    def covering(lo: int, hi: int) -> tuple[int, int] | None:
        """The tokens overlapping characters [lo, hi); for whitespace between tokens, the next one."""
        first = bisect.bisect_right(ends, lo)  # the first token ending after lo
        last = max(first + 1, bisect.bisect_left(starts, hi))  # past the last token starting before hi
        return (tokens[first], tokens[last - 1] + 1) if first < len(tokens) else None

    address = _ADDRESS.fullmatch(query)
    if address:
        kind, number = address.group(1).lower(), int(address.group(2))
        if kind == "char":
            hit = covering(number, number + 1) if number < len(text) else None
            return [hit] if hit else []
        lines = text.split("\n")
        if not 1 <= number <= len(lines):
            return []
        start = sum(len(line) + 1 for line in lines[: number - 1])
        hit = covering(start, start + max(1, len(lines[number - 1])))
        return [hit] if hit else []
    words = query.split()
    if not words:
        return []
    found = []
    for match in re.finditer(r"\s+".join(map(re.escape, words)), text, re.IGNORECASE):  # any whitespace between words
        hit = covering(match.start(), match.end())
        if hit and (not found or found[-1] != hit):
            found.append(hit)
        if len(found) == MAX_MATCHES:
            break
    return found
