"""`python -m explorer.sweep [INPUT ...] --out DIR`: a corpus sweep into a Parquet table (see explorer.sweep).

    python -m explorer.sweep notes/ texts.jsonl --models minilm smollm2 --layers 0 3 \\
        --mechanisms lsh segmented:segment_length=512,overlap=64 sinks --max-tokens 1024 4096 --out sweeps/notes
    python -m explorer.sweep --models smollm2 --in-model segmented memory --max-tokens 2048 --out sweeps/samples
"""
from __future__ import annotations

import argparse
import os
import sys

import pyarrow.compute as pc

from explorer.analysis.needle_corpus import folder
from explorer.sweep import ENGINES, sweep
from explorer.sweep.needle import needle_settings, sweep_needle
from explorer.sweep.table import claim, read


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explorer.sweep", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("inputs", nargs="*", help="files, folders (their .txt and .md files) or .jsonl files "
                                             '({"text": ..., "name": optional} per line); default: the bundled samples')
    p.add_argument("--out", required=True, help="directory of the Parquet table (a sweep there is resumed)")
    p.add_argument("--models", nargs="+", default=["minilm"], help="minilm, smollm2, a Hugging Face id or folder")
    p.add_argument("--layers", nargs="+", type=int, default=None, help="layers to measure (default: every layer)")
    p.add_argument("--heads", nargs="+", type=int, default=None, help="heads to measure (default: every head)")
    p.add_argument("--mechanisms", nargs="*", default=[],
                   help="mechanisms measured beside dense, each NAME or NAME:param=value,param=value "
                        "(e.g. lsh segmented:segment_length=512 sinks:window=128)")
    p.add_argument("--max-tokens", nargs="+", type=int, default=None, metavar="N",
                   help="lengths: measure each text's first N tokens for each N (e.g. 512 1024 2048), and a "
                        "text shorter than a cap once whole; default: whole texts")
    p.add_argument("--rows", type=int, default=512, help="query rows measured per text, evenly spaced")
    p.add_argument("--in-model", nargs="*", default=None, metavar="MECHANISM",
                   help="also swap a window of 256 alone and with 4 sinks (StreamingLLM's pair), and these mechanisms "
                        "(written as --mechanisms), into every layer of each causal LM and score the text's next "
                        "tokens: a table of its own in DIR/_in_model (perplexity against the model's own attention); "
                        "a sweep without one may add it")
    p.add_argument("--engine", choices=ENGINES, default="ray", help="ray (default) or a plain local loop")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="a Ray cluster to join (default: RAY_ADDRESS; none: start a local Ray)")
    p.add_argument("--workers", type=int, default=1, help="Ray workers, each holding its own models")
    p.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPUs per Ray worker, where GPUs exist")
    p.add_argument("--verbose", action="store_true", help="print Ray's own log lines and its workers' output too")
    p.add_argument("--needle", action="store_true",
                   help="also ask each (document, model) back a fact planted at several positions, with the model's "
                        "own attention and each mechanism that has a causal form, into a table of its own "
                        "(--out/_needle; in this process, after the head table); the prompt is the largest "
                        "--max-tokens long (default 2048)")
    p.add_argument("--fact", help="the fact --needle plants (default: the bundled one SmolLM2 retrieves)")
    p.add_argument("--question", help="the question after the text, ending where the answer begins")
    p.add_argument("--answer", help="the answer as it continues the question (mind its leading space)")
    p.add_argument("--needle-positions", nargs="+", type=float, default=None, metavar="P",
                   help="relative positions of the fact, 0 (the text's start) to 1 (its end); default 0 .25 .5 .75 1")
    return p


def main(argv=None) -> None:
    p = parser()
    args = p.parse_args(argv)
    asked = [f"--{k.replace('_', '-')}" for k in ("fact", "question", "answer", "needle_positions")
             if getattr(args, k) is not None]
    if asked and not args.needle:
        p.error(f"{', '.join(asked)} set what --needle asks: add --needle")
    try:
        needle, left_out = needle_settings(args.fact, args.question, args.answer, args.needle_positions,
                                           args.max_tokens, args.mechanisms)
        if args.needle:  # a resumed needle table asking otherwise is refused before anything runs
            claim(folder(args.out), needle.record())
        report = sweep(args.inputs, args.out, args.models, args.layers, args.heads, args.mechanisms, args.max_tokens,
                       args.rows, args.engine, args.address, args.workers, args.gpus_per_worker,
                       verbose=args.verbose, in_model=args.in_model)
    except ValueError as err:
        p.error(str(err))
    table = read(args.out)
    failed = table.filter(pc.not_equal(table["error"], ""))
    failed = sorted(set(zip(failed["document"].to_pylist(), failed["model"].to_pylist())))
    print(f"{report.ran} (document, model) measured, {report.skipped} held already, in {report.seconds:.0f} s; "
          f"{table.num_rows} rows in {args.out}", file=sys.stderr)
    for document, model in failed:
        print(f"failed: {document} under {model} (its error is in the table)", file=sys.stderr)
    if args.needle:
        for name in left_out:
            print(f"--needle leaves out {name}: it has no causal form", file=sys.stderr)
        ran, held, seconds = sweep_needle(args.inputs, args.out, args.models, needle)
        print(f"needle: {ran} (document, model) asked, {held} held already, in {seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
