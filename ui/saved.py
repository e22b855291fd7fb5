"""Small tables kept on disk across restarts, so a fresh server opens a text it has seen before
without remaking them: which layer and head a long text opens on (ui.compute.content_heads) needs
every layer of the model over the text, tens of seconds that a restarted demo's first visitor
would otherwise wait for.

A table is stored as <key>.parquet in EXPLORER_SAVED_DIR (default ~/.cache/attention-explorer/saved);
its key is a hash of everything it came from: the model's name, configuration and weights
(weights_key), the text's content key, the window and the source of the code that computed it.
Any change is another key, so a stale table is never read; at most EXPLORER_SAVED_FILES tables
(default 256) are kept, the least recently used removed first. A folder that cannot be read or
written only means nothing is saved: the table is made as if it never was.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
from pathlib import Path

import pandas as pd
import torch

from ui.messages import LOG

_LOCK = threading.Lock()


def weights_key(model: torch.nn.Module) -> str:
    """A hash of a model's configuration and of every parameter and buffer, bit for bit."""
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    digest.update((config.to_json_string() if config is not None else type(model).__name__).encode())
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def key(*parts, code=()) -> str:
    """The name of a table made from `parts` (JSON-able values) by the modules in `code`."""
    sources = [inspect.getsource(module) for module in code]
    return hashlib.sha256(json.dumps([parts, sources]).encode()).hexdigest()[:32]


class Saved:
    """Tables in one folder under their key, at most `max_files` of them."""

    def __init__(self, root: Path, max_files: int):
        self.root, self.max_files = Path(root), max_files

    @classmethod
    def from_env(cls) -> Saved:
        root = os.environ.get("EXPLORER_SAVED_DIR") or Path.home() / ".cache" / "attention-explorer" / "saved"
        raw = os.environ.get("EXPLORER_SAVED_FILES", "256")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"EXPLORER_SAVED_FILES={raw!r} must be a whole number of at least 1")
        return cls(Path(root), int(raw))

    def get(self, name: str) -> pd.DataFrame | None:
        """The table saved under `name`, or None (never saved, removed since, or unreadable)."""
        path = self.root / f"{name}.parquet"
        try:
            table = pd.read_parquet(path)
            path.touch()
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged file is made again, never shown
            LOG.warning("saved table %s unreadable: made again", path, exc_info=True)
            return None
        return table

    def has(self, name: str) -> bool:
        return (self.root / f"{name}.parquet").is_file()

    def put(self, name: str, table: pd.DataFrame) -> None:
        """Save a table (whole or not at all), dropping the oldest beyond max_files."""
        path = self.root / f"{name}.parquet"
        try:
            with _LOCK:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
                table.to_parquet(tmp, index=False)
                tmp.replace(path)
                for old in sorted(self.root.glob("*.parquet"), key=lambda p: p.stat().st_mtime)[: -self.max_files]:
                    old.unlink(missing_ok=True)
        except OSError:
            LOG.warning("could not save %s: it is made again after a restart", path, exc_info=True)
