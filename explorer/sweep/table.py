"""The sweep table written in the columns and Arrow types the Corpus page reads
(explorer.analysis.corpus.SCHEMA), and what a sweep directory already holds."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from explorer.analysis.corpus import SCHEMA  # the one declaration of the columns, beside their reader

SETTINGS_FILE = "_sweep.json"  # what the sweep measured; Parquet readers skip names starting with "_"


def as_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with every column) as a table of exactly SCHEMA's types."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def read(out) -> pa.Table:
    """The whole sweep in directory `out` (every part file), in SCHEMA's types."""
    return ds.dataset(str(out), format="parquet", schema=SCHEMA).to_table()


def finished(out) -> set[tuple[str, str]]:
    """(source, model) pairs the directory holds rows of (an error row included)."""
    if not any(Path(out).glob("*.parquet")):
        return set()
    done = ds.dataset(str(out), format="parquet", schema=SCHEMA).to_table(columns=["source", "model"])
    return set(zip(done["source"].to_pylist(), done["model"].to_pylist()))


def claim(out, record: dict) -> None:
    """Write what this sweep measures beside its rows, or check a resumed sweep measures the same:
    rows of other settings in one table would not compare."""
    path = Path(out) / SETTINGS_FILE
    if path.exists():
        held = json.loads(path.read_text())
        if isinstance(held.get("max_tokens"), int):  # written when a sweep took one length
            held["max_tokens"] = [held["max_tokens"]]
        if held != record:
            changed = sorted(k for k in set(held) | set(record) if held.get(k) != record.get(k))
            differences = "; ".join(f"{k} {held.get(k)!r} there, {record.get(k)!r} here" for k in changed)
            raise ValueError(f"{out} holds a sweep with other settings ({differences}): resume it with those, "
                             "or use another --out")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
