"""A head's attention in one plain sentence, from the model view's statistics (analysis.model_view):
how close to uniform, how local, how much goes to the first token, over how many keys half of
it spreads, and how far it reaches. A nearly uniform head on a long text is said to be nearly
uniform, rather than left as a flat picture."""
from __future__ import annotations

from explorer.analysis.sinks import THRESHOLD

SPREAD = ((0.95, "Nearly uniform"), (0.8, "Spread out"), (0.5, "Mixed"), (0.0, "Focused"))


def _share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 else f"{x:.1%}" if x >= 0.001 else "under 0.1%"


def is_sink(first_mass: float, n: int) -> bool:
    """Gu et al.'s threshold, and on a text of a few tokens more than twice a uniform row's share:
    on 3 tokens a uniform head already gives the first a third."""
    return first_mass > max(THRESHOLD, 2 / n)


def describe(stats: dict, n: int, local: int, first_token: str = "the first token") -> str:
    """One sentence for a head: stats holds entropy (normalised), local_mass, first_mass,
    half_keys and distance, as analysis.model_view computes them on sampled queries."""
    entropy = float(stats["entropy"])
    kind = next(word for bound, word in SPREAD if entropy >= bound)
    sink = float(stats["first_mass"])
    parts = [f"{kind} (entropy {entropy:.0%} of a uniform row's)",
             f"{_share(float(stats['local_mass']))} of each query's attention stays within {local} tokens",
             f"{_share(sink)} goes to {first_token}" + (" (an attention sink)" if is_sink(sink, n) else ""),
             f"half of it spreads over {float(stats['half_keys']):,.0f} of {n:,} keys"]
    return f"{parts[0]}: " + ", ".join(parts[1:-1]) + f", and {parts[-1]}; mean distance " \
           f"{float(stats['distance']):,.0f} tokens."


def layer_sinks(first_mass, head: int, n: int) -> str:
    """How many of a layer's heads are attention sinks, and whether this head is one: the first thing to
    know about a causal LM's layer (first_mass [heads] as analysis.model_view computes it)."""
    masses = [float(x) for x in first_mass]
    count = sum(is_sink(m, n) for m in masses)
    this = "this head is one" if is_sink(masses[head], n) else "this head is not"
    if not count:
        return (f"No head of this layer gives the first token more than {THRESHOLD:g} of its attention: no "
                "attention sink here (sinks form past a causal LM's first layers).")
    return (f"{count} of this layer's {len(masses)} heads are attention sinks (they give the first token more than "
            f"{THRESHOLD:g} of their attention, Gu et al.); {this}.")
