"""Pasted and uploaded texts kept on disk under their hash, so a link can reopen them.

A text is stored as <sha256>.txt in EXPLORER_TEXT_DIR (default ~/.cache/attention-explorer/texts);
one text may take EXPLORER_TEXT_MAX_MB (default 8) and all of them EXPLORER_TEXT_STORE_MB
(default 512), the least recently used removed first. The same text always gets the same key,
so storing it again costs nothing.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

KEY = re.compile(r"[0-9a-f]{32}")
_LOCK = threading.Lock()


def content_key(text: str) -> str:
    """The one name of a text's content: its file in the store, and its part of every cache key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _mb(name: str, default: float) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive number of megabytes")
    return int(value * 2**20)


class TextStore:
    """Content-addressed texts in one folder, bounded per text and in total."""

    def __init__(self, root: Path, max_text: int, max_total: int):
        self.root, self.max_text, self.max_total = Path(root), max_text, max_total

    @classmethod
    def from_env(cls) -> TextStore:
        root = os.environ.get("EXPLORER_TEXT_DIR") or Path.home() / ".cache" / "attention-explorer" / "texts"
        return cls(Path(root), _mb("EXPLORER_TEXT_MAX_MB", 8), _mb("EXPLORER_TEXT_STORE_MB", 512))

    def put(self, text: str, key: str | None = None) -> str:
        """Store a text; its key (content_key(text), given when already known). ValueError when it is
        larger than one text may be."""
        data = text.encode("utf-8")
        if len(data) > self.max_text:
            raise ValueError(f"this text is {len(data) / 2**20:.1f} MB; a link can carry texts of up to "
                             f"{self.max_text / 2**20:.0f} MB")
        key = key or content_key(text)
        with _LOCK:
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / f"{key}.txt"
            if path.exists():
                path.touch()
            else:
                tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(path)  # whole or not at all, even with two writers
            self._evict()
        return key

    def get(self, key: str) -> str | None:
        """The text stored under `key`, or None (never stored, or removed since)."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            return None
        path = self.root / f"{key}.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        path.touch()
        return text

    def _evict(self) -> None:
        files = sorted(self.root.glob("*.txt"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files[:-1]:
            if total <= self.max_total:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
