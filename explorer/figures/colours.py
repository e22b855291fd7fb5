"""One colour per mechanism on every chart, and the names a legend shows for them.

A reader learns a mechanism's colour once and finds it again on every page, so the colour is
keyed by registry key (explorer.mechanisms.REGISTRY), never by a chart's order. Dense is the
neutral reference, always dark grey. The mechanisms take Paul Tol's "muted" scheme and every
other categorical series Okabe and Ito's: both stay apart under the common colour-vision
deficiencies (P. Tol, "Colour Schemes", SRON/EPS/TN/09-002; Okabe & Ito, "Color Universal Design", 2008).
"""
from __future__ import annotations

from explorer.mechanisms import DENSE, REGISTRY

NEUTRAL = "#4d4d4d"  # dense attention, and lines that mark a reference (a chosen k, a query)
MECHANISMS = {
    DENSE: NEUTRAL,
    "lsh": "#332288",  # indigo
    "lowrank": "#cc6677",  # rose
    "segmented": "#44aa99",  # teal
    "hierarchical": "#117733",  # green
    "memory": "#ddcc77",  # sand
    "routing": "#882255",  # wine
    "relpos": "#999933",  # olive
    "sinks": "#aa4499",  # purple
}  # Tol's pale cyan (#88ccee) is left out: too faint for a line on white
# Okabe-Ito without black and yellow (too close to dense, too faint on white): series that are
# not mechanisms (metrics, methods, regions), in this order.
SERIES = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9")
CAUGHT, MISSED = SERIES[0], SERIES[1]  # blue against orange, never red against green
CAUGHT_SYMBOL, MISSED_SYMBOL = "circle", "x"  # a second cue besides the hue


def key_of(name: str) -> str | None:
    """The registry key a chart's series name stands for (a key, a title, or "Dense"), else None."""
    if name in MECHANISMS:
        return name
    for key, mech in REGISTRY.items():
        if name == mech.title:
            return key
    lower = name.lower()
    return lower if lower in MECHANISMS else None


def title_of(name: str) -> str:
    """What a legend says for a series: a mechanism's title for its key, any other name as given."""
    key = key_of(name)
    return REGISTRY[key].title if key in REGISTRY else name


def colour_of(name: str) -> str | None:
    """The mechanism's colour for a key or title, None for a series that is no mechanism."""
    key = key_of(name)
    return MECHANISMS[key] if key else None


def cycle(count: int) -> list[str]:
    """`count` Okabe-Ito colours in turn, for series that are no mechanism."""
    return [SERIES[i % len(SERIES)] for i in range(count)]


def series_colours(names) -> dict[str, str]:
    """A colour for every name: mechanisms their own, the other series Okabe-Ito in turn."""
    names = list(names)
    others = iter(cycle(len(names)))
    return {name: colour_of(name) or next(others) for name in names}


def dense_last(names) -> list:
    """Names in drawing order: dense, the reference, drawn last so it lies on top."""
    names = list(names)
    return [n for n in names if key_of(str(n)) != DENSE] + [n for n in names if key_of(str(n)) == DENSE]


def fill(colour: str, alpha: float = 0.18) -> str:
    """The colour as a translucent rgba() fill (bands around a line)."""
    h = colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
