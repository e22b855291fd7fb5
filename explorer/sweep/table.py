"""The sweep table: its columns and Arrow types (the contract the Corpus page reads), and what a
sweep directory already holds."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

SCHEMA = pa.schema([
    ("document", pa.string()), ("source", pa.string()), ("text_tokens", pa.int64()), ("tokens", pa.int64()),
    ("model", pa.string()), ("layer", pa.int64()), ("head", pa.int64()), ("mechanism", pa.string()),
    ("params", pa.string()), ("rows", pa.int64()), ("output_rel_error", pa.float64()),
    ("total_variation", pa.float64()), ("topk_recall", pa.float64()), ("entropy_mean", pa.float64()),
    ("normalised_entropy", pa.float64()), ("max_weight_mean", pa.float64()), ("first_token_mass", pa.float64()),
    ("sink", pa.bool_()), ("seconds", pa.float64()), ("error", pa.string()),
])
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
        if held != record:
            changed = sorted(k for k in set(held) | set(record) if held.get(k) != record.get(k))
            differences = "; ".join(f"{k} {held.get(k)!r} there, {record.get(k)!r} here" for k in changed)
            raise ValueError(f"{out} holds a sweep with other settings ({differences}): resume it with those, "
                             "or use another --out")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
