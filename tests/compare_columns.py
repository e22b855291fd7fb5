"""What each Compare column costs: `python tests/compare_columns.py [--model M] [--sample S]`.

Encodes a sample as the app does (ui.compute, one process, one cache), times dense's statistics pass,
then for each mechanism at its default parameters the steps its Compare column makes, each alone:
its run on the head, its pooled map, its fidelity against dense and one query's row. A measurement,
not a test: the figures move with the machine's load, so they are printed, never asserted.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.core.samples import load_sample  # noqa: E402
from explorer.mechanisms import DENSE, REGISTRY  # noqa: E402
from ui import compute  # noqa: E402
from ui.state import Encoding, Run  # noqa: E402

GRID = 160  # the app's default map grid (ui.maps.GRID)


def seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sample", default="Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station")
    args = parser.parse_args(argv)
    enc = Encoding.of_text(load_sample(args.sample), args.model, 0, 0)
    dense = Run(enc, 0, doc=compute.encoded(enc))
    whole = (0, dense.doc.n, 0, dense.doc.n)
    passed = seconds(lambda: compute.dense(dense, GRID))
    print(f"{dense.doc.n:,} tokens, {args.model}, layer 0, head 0: dense statistics pass {passed:.2f} s")
    for key, mech in REGISTRY.items():
        if key == DENSE:
            continue
        run = dense.of(key, {p.name: p.default for p in mech.params})
        try:
            steps = {"run": seconds(lambda: compute.result(run)),
                     "map": seconds(lambda: compute.window_map(run, whole, GRID)),
                     "fidelity": seconds(lambda: compute.fidelity_of(run)),
                     "row": seconds(lambda: compute.query_row(run, dense.doc.n // 2))}
        except ValueError as err:
            print(f"{key:12s} refused: {err}")
            continue
        total = sum(steps.values())
        print(f"{key:12s} " + "  ".join(f"{name} {s:.2f}" for name, s in steps.items())
              + f"  total {total:.2f} s ({total / passed:.1f}x dense's pass)")


if __name__ == "__main__":
    main()
