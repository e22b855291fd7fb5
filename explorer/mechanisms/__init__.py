"""Every attention mechanism, behind one interface, in one registry.

Each module in this package holds one mechanism (`MECHANISM`, an instance of
`base.Mechanism`); `spans` is the engine segmented and hierarchical share.
REGISTRY maps each key to its mechanism, in the order the app shows them.
"""
from __future__ import annotations

from explorer.mechanisms import dense, hierarchical, lowrank, lsh, memory, relpos, routing, segmented, sinks
from explorer.mechanisms.base import Mechanism, Param, Result, Structure

DENSE = dense.MECHANISM.key  # the exact reference every other mechanism is measured against

REGISTRY: dict[str, Mechanism] = {m.key: m for m in (
    dense.MECHANISM, lsh.MECHANISM, lowrank.MECHANISM, segmented.MECHANISM, hierarchical.MECHANISM,
    memory.MECHANISM, sinks.MECHANISM, routing.MECHANISM, relpos.MECHANISM)}

__all__ = ["DENSE", "REGISTRY", "Mechanism", "Param", "Result", "Structure"]
