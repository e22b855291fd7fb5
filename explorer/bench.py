"""`python -m explorer.bench`: speed and memory against torch's own SDPA.

For each n: encode a real text of n tokens (the project's long sample, repeated
when n is larger), then time on one head the streamed dense statistics pass,
torch.nn.functional.scaled_dot_product_attention on the same q/k/v, and every
registered mechanism at its defaults. Times are the best of --repeat runs;
peak memory is the step's own rise (CUDA: max allocated; CPU: resident set
sampled every millisecond), so it shows whether a step is O(n^2).
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch

from explorer.core.device import pick_device, synchronize
from explorer.core.encoding import encode, load_model
from explorer.core.samples import SAMPLES_DIR
from explorer.core.stats import attention_stats
from explorer.core.synthetic import synthetic
from explorer.mechanisms import REGISTRY

# Settings worth timing beside each mechanism's defaults.
VARIANTS = {
    "lsh shared-QK": ("lsh", {"shared_qk": True}),
    "linformer": ("lowrank", {"method": "linformer"}),
    "svd (yardstick)": ("lowrank", {"method": "svd"}),
    "segmented+summaries": ("segmented", {"summaries": True}),
    "hierarchical b=4": ("hierarchical", {"branching": 4}),
    "memory+compressed": ("memory", {"compressed": 64}),
    "router": ("routing", {"mode": "router"}),
    "alibi": ("relpos", {"kind": "alibi"}),
    "rope": ("relpos", {"kind": "rope"}),
}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Peak memory a block adds: CUDA allocator peak, or sampled RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base, self.top, self.running = _rss(), _rss(), True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.top = max(self.top, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.running = False
            self.thread.join()
            self.bytes = max(0, max(self.top, _rss()) - self.base)


def measure(fn, device, repeat: int) -> tuple[float, int]:
    """Best wall time of `repeat` calls and the peak memory of the first."""
    best, peak = float("inf"), 0
    for i in range(repeat):
        with Peak(device) as p:
            start = time.perf_counter()
            fn()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        peak = peak if i else p.bytes
    return best, peak


def text_of(n: int, tokenizer) -> str:
    """A real text of exactly n tokens: the long sample, repeated as needed and cut."""
    base = max(SAMPLES_DIR.glob("*.md"), key=lambda p: p.stat().st_size).read_text(encoding="utf-8")
    count = len(tokenizer(base, add_special_tokens=False, verbose=False)["input_ids"])
    text = "\n\n".join([base] * (n // count + 1))
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    return text[: offsets[n - 1][1]]


def real_head(n: int, lm, layer: int, head: int, device):
    """q, k, v of one head over a real text of n tokens, and the seconds encoding took."""
    start = time.perf_counter()
    doc = encode(text_of(n, lm.tokenizer), lm, layer=layer)
    synchronize(device)
    seconds = time.perf_counter() - start
    return (*(x[head : head + 1].contiguous() for x in (doc.q, doc.k, doc.v)), seconds)


def synthetic_head(n: int, device):
    """Seeded Gaussian q, k, v of MiniLM's head size, for machines without the bundled model."""
    doc = synthetic(n, heads=1, head_dim=32)
    return (*(x.to(device) for x in (doc.q, doc.k, doc.v)), float("nan"))


def bench(sizes, device_name=None, repeat=2, mechanisms=None, head=0, layer=0, use_synthetic=False):
    device = pick_device(device_name)
    lm = None if use_synthetic else load_model("minilm", str(device))
    rows = []
    for n in sizes:
        q, k, v, enc = synthetic_head(n, device) if use_synthetic else real_head(n, lm, layer, head, device)
        n = q.shape[1]  # a real text adds the model's special tokens
        sdpa_t, sdpa_m = measure(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), device, repeat)
        row = {"n": n, "device": str(device), "encode_s": enc, "sdpa_s": sdpa_t, "sdpa_peak": sdpa_m}
        t, m = measure(lambda: attention_stats(q, k, v), device, repeat)
        row["steps"] = {"attention_stats": (t, m)}
        for label, (key, params) in runs(mechanisms).items():
            row["steps"][label] = measure(lambda: REGISTRY[key].run(q, k, v, **params), device, repeat)
        rows.append(row)
        print_row(row)
    return rows


def runs(mechanisms) -> dict[str, tuple[str, dict]]:
    """label -> (registry key, params): every mechanism's defaults and its variants, or only those asked for."""
    keys = [key for key in REGISTRY if key != "dense"] if mechanisms is None else mechanisms
    out = {key: (key, {}) for key in keys}
    out.update({label: spec for label, spec in VARIANTS.items() if spec[0] in keys and spec[0] in REGISTRY})
    return out


def print_row(row) -> None:
    mib = 2**20
    source = "synthetic q/k/v" if row["encode_s"] != row["encode_s"] else f"encode {row['encode_s']:.2f} s, all heads"
    print(f"\nn = {row['n']:,} on {row['device']}  ({source}; "
          f"SDPA {row['sdpa_s'] * 1e3:.1f} ms, peak +{row['sdpa_peak'] / mib:.0f} MiB)")
    print(f"  {'step':<20}{'seconds':>10}{'x SDPA':>10}{'peak MiB':>11}")
    for name, (t, m) in row["steps"].items():
        print(f"  {name:<20}{t:>10.3f}{t / row['sdpa_s']:>10.1f}{m / mib:>11.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 16384], help="sequence lengths")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per step; the best time is kept")
    parser.add_argument("--mechanisms", nargs="*", default=None,
                        help="registry keys (default: all; the flag alone: none, dense pass only)")
    parser.add_argument("--synthetic", action="store_true",
                        help="seeded Gaussian q/k/v instead of encoding the long sample with MiniLM")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    unknown = set(args.mechanisms or []) - set(REGISTRY)
    if unknown or min(args.n) < 1:
        parser.error(f"unknown mechanisms {sorted(unknown)}" if unknown else "n must be >= 1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = bench(args.n, args.device, args.repeat, args.mechanisms, use_synthetic=args.synthetic)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
