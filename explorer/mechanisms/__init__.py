"""Every attention mechanism, behind one interface, in one registry.

Each module in this package defines MECHANISM, an instance of
`base.Mechanism`; REGISTRY maps its key to it, in the order the app shows them.
"""
from __future__ import annotations

import importlib
import pkgutil

from explorer.mechanisms.base import Mechanism, Param, Result

ORDER = ("dense", "lsh", "lowrank", "segmented", "hierarchical", "memory", "routing", "relpos")


def _discover() -> dict[str, Mechanism]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        mech = getattr(module, "MECHANISM", None)
        if isinstance(mech, Mechanism):
            found[mech.key] = mech
    rank = {key: i for i, key in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(ORDER))))


REGISTRY: dict[str, Mechanism] = _discover()

__all__ = ["REGISTRY", "ORDER", "Mechanism", "Param", "Result"]
