"""The sweep's tables written in the columns and Arrow types the Corpus page reads (explorer.analysis.corpus:
SCHEMA, the head table, in the sweep's directory; IN_MODEL_SCHEMA in its folder IN_MODEL), and what a sweep
directory already holds."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from explorer.analysis.corpus import SCHEMA  # the one declaration, beside the reader

SETTINGS_FILE = "_sweep.json"  # what the sweep measured; Parquet readers skip names starting with "_"


def as_table(rows: list[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rows (dicts with every column) as a table of exactly the schema's types."""
    return pa.Table.from_pylist(rows, schema=schema)


def read(out) -> pa.Table:
    """The whole sweep in directory `out` (every part file), in SCHEMA's types."""
    return ds.dataset(str(out), format="parquet", schema=SCHEMA).to_table()


def finished(out, schema: pa.Schema = SCHEMA) -> set[tuple[str, str]]:
    """(source, model) pairs the table of this schema in directory `out` holds rows of (an error row
    included): the head table's, or a side table's in its own folder."""
    if not any(Path(out).glob("*.parquet")):
        return set()
    done = ds.dataset(str(out), format="parquet", schema=schema).to_table(columns=["source", "model"])
    return set(zip(done["source"].to_pylist(), done["model"].to_pylist()))


def claim(out, record: dict) -> None:
    """Write what this sweep measures beside its rows, or check a resumed sweep measures the same:
    rows of other settings in one table would not compare. The in-model table may be added to a sweep
    that has none (its record then says so), or left out when resuming one that has it."""
    path = Path(out) / SETTINGS_FILE
    if path.exists():
        held = json.loads(path.read_text())
        if isinstance(held.get("max_tokens"), int):  # written when a sweep took one length
            held["max_tokens"] = [held["max_tokens"]]
        compared = dict(record)
        if "in_model" not in held:
            compared.pop("in_model", None)  # added now: the head table's settings are what must match
        elif "in_model" not in record:
            compared["in_model"] = held["in_model"]  # resumed without it: its table is left as it is
        if held != compared:
            changed = sorted(k for k in set(held) | set(compared) if held.get(k) != compared.get(k))
            differences = "; ".join(f"{k} {held.get(k)!r} there, {compared.get(k)!r} here" for k in changed)
            raise ValueError(f"{out} holds a sweep with other settings ({differences}): resume it with those, "
                             "or use another --out")
        if "in_model" in record and "in_model" not in held:
            path.write_text(json.dumps(record, indent=1) + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
