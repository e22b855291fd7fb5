"""`python -m explorer.bench`: speed and memory against torch's own SDPA.

For each n: encode a real text of n tokens (the project's long sample, or with
--text python the Python language reference, repeated when n is larger and
cut to n), then on one head and on all heads of that layer time, beside
torch.nn.functional.scaled_dot_product_attention on the same q/k/v:
the statistics pass (exact: every row; preview: --preview evenly spaced rows;
progressive: the app's pass, preview rows first, timed to its first snapshot and to its end),
the same statistics on fused kernels (explorer.core.fused; "kernel only": its output and lse
alone), the reference pass it replaced (one head only), and every registered mechanism
at its defaults and notable settings (--flex adds FlexAttention versions of
segmented and sink + window, to show what compiling them costs here; on CUDA also their
statistics from the same call). --compile-times opens the run with FlexAttention's compile times.

SDPA is called on [1, heads, n, d], the layout that reaches the device's fused
kernel (flash on the CPU); "sdpa 3-D" is the [heads, n, d] call of earlier
benches, which the CPU runs on its math path, materialising n x n (skipped when
that would not fit in memory). "first s" is the first call (any compiling
included), "steady s" the best of the other --repeat - 1 calls, peak memory the
step's own rise in one more call (CUDA: max allocated; CPU: the resident
set's high-water mark, see measure), so it shows whether a step is O(n^2). "cpu x SDPA" divides the
process's CPU seconds (all threads) of the best call by SDPA's: on a machine shared with other jobs
it moves less with their load than wall time does. On the CPU, "stats exact, eager" is the same pass
without its compiled block reductions (explorer.core.binreduce, whose build is timed apart).

--in-model times the model's own forward pass instead (SmolLM2 over the sample's first --n tokens,
2,048 by default), then the same pass with each mechanism swapped into every layer
(explorer.analysis.in_model.PRESETS), with StreamingLLM's table of what it then predicts.

--encode MODEL... times encoding instead: per model and length, one layer (the app's Run)
and every layer (the model view's capture), with the windows used and the peak memory.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from explorer.core.bias import ALiBi, RelativeBuckets
from explorer.core import binreduce
from explorer.core.device import pick_device, synchronize
from explorer.core.encoding import encode, encode_layers, load_model
from explorer.core.fused import bin_maps, bin_weights, fused_stats, kernel_rows, masked_stats
from explorer.core.rule import AttentionRule
from explorer.core.rows import preview_first, sample_rows
from explorer.core.samples import SAMPLES_DIR, python_reference
from explorer.core.stats import attention_stats, by_position, reference_stats, stream_stats
from explorer.core.synthetic import synthetic
from explorer.mechanisms import REGISTRY
from explorer.mechanisms.relpos import alibi_slopes, learned_table

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
SYNTHETIC_HEADS = 12  # MiniLM's head count, so --synthetic's "all heads" is the same work
SINKS, WINDOW = 4, 256  # the sink + window setting --flex times


_TRIM_THRESHOLD, _MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def _malloc(mmap_threshold: int, trim_threshold: int) -> None:
    """Blocks over mmap_threshold bytes are mapped apart and unmapped when freed; the heap gives
    back its free top beyond trim_threshold bytes, and its free pages now (glibc only)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_TRIM_THRESHOLD, trim_threshold)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _available(device: torch.device) -> int:
    """Bytes a step may still allocate on the device."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


class Peak:
    """Peak memory a block adds: CUDA allocator peak, or on the CPU the kernel's resident-set high-water
    mark (reset on entry through /proc/self/clear_refs), so no short peak is missed between samples."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.bytes = max(0, _status_kib("VmHWM") * 1024 - self.base)


def measure(fn, device, repeat: int) -> dict:
    """First call's time, best time of the others (the first's when repeat is 1), and the peak of
    one more call. On the CPU that call maps every block over 64 KiB apart, so the sampled resident
    set is what the step holds, not what earlier steps left in malloc's pools; the timed calls keep
    pools, since mapping or trimming each block apart slowed the statistics pass eightfold."""
    times, cpu = [], []
    for _ in range(max(1, repeat)):
        start, used = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - used)
    _malloc(64 * 2**10, 64 * 2**10)
    with Peak(device) as p:
        fn()
    _malloc(32 * 2**20, 64 * 2**20)  # where glibc's own moving thresholds end up: the timed calls' pools
    return {"first_s": times[0], "s": min(times[1:] or times), "cpu_s": min(cpu[1:] or cpu), "peak_bytes": p.bytes}


def measure_or_error(fn, device, repeat: int) -> dict:
    """measure, or the step's error in words: a kernel that does not compile on this device (a flex
    compile, too wide values) is one line of the report, not the end of the run."""
    try:
        return measure(fn, device, repeat)
    except (RuntimeError, NotImplementedError, ValueError) as err:  # torch's compile errors are RuntimeErrors
        return {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"}


def text_of(n: int | None, tokenizer, base: str) -> str:
    """A real text of exactly n tokens: `base`, repeated as needed and cut (None: `base` itself)."""
    if n is None:
        return base
    count = len(tokenizer(base, add_special_tokens=False, verbose=False)["input_ids"])
    text = "\n\n".join([base] * (n // count + 1))
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    return text[: offsets[n - 1][1]]


def base_text(name: str) -> str:
    """The project's longest sample, or the Python language reference (128,977 MiniLM tokens)."""
    if name == "python":
        return python_reference()
    return max(SAMPLES_DIR.glob("*.md"), key=lambda p: p.stat().st_size).read_text(encoding="utf-8")


def real_qkv(n: int | None, lm, layer: int, text: str, device):
    """q, k, v of every head of one layer over a real text of n tokens, and the seconds encoding took."""
    start = time.perf_counter()
    doc = encode(text_of(n, lm.tokenizer, base_text(text)), lm, layer=layer)
    synchronize(device)
    return doc.q, doc.k, doc.v, time.perf_counter() - start


def synthetic_qkv(n: int, device):
    """Seeded Gaussian q, k, v of MiniLM's shape, for machines without the bundled model."""
    doc = synthetic(n, heads=SYNTHETIC_HEADS, head_dim=32)
    return (*(x.to(device) for x in (doc.q, doc.k, doc.v)), float("nan"))


def steps(q, k, v, mechanisms, preview: int, reference: bool, flex: bool) -> dict:
    """name -> a call of that step on these q, k, v."""
    n = q.shape[1]
    rows = sample_rows(n, preview).to(q.device)
    out = {"sdpa": lambda: F.scaled_dot_product_attention(q[None], k[None], v[None])}
    if 2 * q.shape[0] * n * n * q.element_size() < _available(q.device) // 2:
        out["sdpa 3-D (math)"] = lambda: F.scaled_dot_product_attention(q, k, v)
    out["stats exact"] = lambda: attention_stats(q, k, v)
    for name, rule in bias_rules(q.shape[0], q.shape[-1]).items():  # a bias inside the layer, per block
        out[f"stats exact, {name}"] = lambda rule=rule: attention_stats(q, k, v, rule=rule)
    if q.device.type == "cpu":  # the same pass without its compiled block reductions (explorer.core.binreduce)
        out["stats exact, eager"] = lambda: binreduce.eager(attention_stats, q, k, v)
    out["stats fused"] = lambda: fused_stats(q, k, v)
    out["fused: kernel only"] = lambda: kernel_rows(q, k, v, AttentionRule.plain(q.shape[-1], False))(
        torch.arange(n, device=q.device))
    if q.device.type == "cuda":  # the mean map from the kernel itself: values = the display bins' one-hot columns
        out["fused: one-hot mean map"] = lambda: bin_weights(q, k, 256)
        out["fused: per-bin lse, max"] = lambda: bin_maps(q, k, 256)  # both maps' rows, 256 flex calls
    out[f"stats preview {rows.numel()}"] = lambda: attention_stats(q, k, v, rows=rows)
    out["progressive: to preview"] = lambda: _progressive(q, k, v, preview, to_preview=True)
    out["progressive: to exact"] = lambda: _progressive(q, k, v, preview, to_preview=False)
    if reference:
        out["reference_stats"] = lambda: reference_stats(q, k, v)
    for label, (key, params) in runs(mechanisms).items():
        out[label] = lambda key=key, params=params: REGISTRY[key].run(q, k, v, **params)
    if flex:
        out.update(flex_steps(q, k, v))
    return out


def bias_rules(heads: int, head_dim: int) -> dict[str, AttentionRule]:
    """Bidirectional rules with a position bias: ALiBi's slopes, and MPNet's learned table (head h its h mod 12)."""
    table = learned_table().values.T  # [12 heads, 32 buckets]
    rows = tuple(tuple(table[h % table.shape[0]].tolist()) for h in range(heads))
    return {"ALiBi": AttentionRule(head_dim**-0.5, False, bias=ALiBi(tuple(alibi_slopes(heads).tolist()))),
            "MPNet buckets": AttentionRule(head_dim**-0.5, False, bias=RelativeBuckets(rows, source="MPNet"))}


def _progressive(q, k, v, preview: int, to_preview: bool):
    """The app's dense pass (preview rows first, explorer.core.rows.preview_first): its first
    snapshot (what the page draws first), or its end, equal to the pass in order."""
    order = preview_first(q.shape[1], preview)
    for done, acc in stream_stats(q, k, v, rows=order):
        if to_preview and done >= min(preview, order.numel()):
            return by_position(acc.result())
    return by_position(acc.result())


def flex_steps(q, k, v) -> dict:
    """FlexAttention on block masks: segmented at its defaults, and sink + window: the output alone,
    and on CUDA the statistics from the same call (explorer.core.fused.masked_stats)."""
    from torch.nn.attention.flex_attention import flex_attention

    from explorer.core.masks import block_mask, key_window, sink_window
    from explorer.core.segments import fixed
    from explorer.mechanisms.spans import windows

    n = q.shape[1]
    kernel = torch.compile(flex_attention, dynamic=True)
    lo, hi = windows(fixed(n, min(REGISTRY["segmented"].defaults()["segment_length"], n), q.device), n, 0)
    masks = {"flex segmented": key_window(lo, hi, False),
             f"flex sinks {SINKS}+window {WINDOW}": sink_window(SINKS, WINDOW)}
    out = {name: lambda mask=mask: kernel(q[None], k[None], v[None], block_mask=block_mask(mask, n, q.device))
           for name, mask in masks.items()}
    if q.device.type == "cuda":
        out.update({f"{name}: stats": lambda mask=mask: masked_stats(q, k, v, mask) for name, mask in masks.items()})
    return out


def flex_compile_times(device) -> dict:
    """Seconds of the first call (compiling) and of the next one, of the fused pass and masked_stats
    at n = 4,096 on CUDA: compiling is paid once per process and shape family, apart from the timings."""
    from explorer.core.masks import sink_window

    doc = synthetic(4096, heads=SYNTHETIC_HEADS, head_dim=32)
    q, k, v = (x.to(device) for x in (doc.q, doc.k, doc.v))
    calls = {"stats fused": lambda: fused_stats(q, k, v),
             "stats fused causal": lambda: fused_stats(q, k, v, causal=True),
             f"masked_stats sinks {SINKS}+window {WINDOW}": lambda: masked_stats(q, k, v, sink_window(SINKS, WINDOW))}
    out = {}
    for name, fn in calls.items():
        m = measure_or_error(fn, device, 2)
        if "error" in m:
            out[name] = m
            print(f"  compile {name:<36}failed: {m['error']}", flush=True)
            continue
        out[name] = {"compile_and_first_s": m["first_s"], "warm_s": m["s"]}
        print(f"  compile {name:<36}{m['first_s']:>8.1f} s first call, {m['s']:.3f} s warm", flush=True)
    return out


def bench(sizes, device_name=None, repeat=2, mechanisms=None, head=0, layer=0, use_synthetic=False,
          text="sample", scopes=("one head", "all heads"), preview=512, flex=False, reference=True,
          compile_times=False):
    device = pick_device(device_name)
    lm = None if use_synthetic else load_model("minilm", str(device))
    rows = []
    if device.type == "cpu":
        built = binreduce.available(torch.zeros(1), 1)
        print(f"\ncompiled block reductions: {'ready' if built else 'unavailable (the eager pass runs)'} after "
              f"{binreduce.compile_seconds:.2f} s ({'built now' if binreduce.built_now else 'found built'}), apart "
              "from every timing below")
        rows.append({"kernel": {"available": built, "seconds": binreduce.compile_seconds,
                                "built_now": binreduce.built_now}})
    if compile_times and device.type == "cuda":
        print(f"\nFlexAttention compile on {torch.cuda.get_device_name(device)} (n = 4,096, {SYNTHETIC_HEADS} heads)")
        rows.append({"flex compile": flex_compile_times(device)})
    elif compile_times:
        print(f"\n--compile-times: the fused pass compiles nothing on {device.type}")
    for n in sizes:
        q, k, v, enc = synthetic_qkv(n, device) if use_synthetic else real_qkv(n, lm, layer, text, device)
        for scope in scopes:
            picked = slice(head, head + 1) if scope == "one head" else slice(None)
            qs, ks, vs = (x[picked].contiguous() for x in (q, k, v))
            row = {"n": qs.shape[1], "heads": qs.shape[0], "scope": scope, "device": str(device), "encode_s": enc,
                   "text": "synthetic" if use_synthetic else text, "steps": {}}
            for name, fn in steps(qs, ks, vs, mechanisms, preview, reference and scope == "one head",
                                   flex).items():
                row["steps"][name] = measure_or_error(fn, device, repeat)
                print_step(row, name)
            rows.append(row)
    return rows


def encode_times(models, sizes, text: str, device_name=None) -> list[dict]:
    """Per model and text length: seconds to load, to encode one layer (the app's Run: the pass stops
    after that layer) and every layer (the model view's capture), windows used, and the peak memory
    of encoding every layer."""
    device = pick_device(device_name)
    rows = []
    for name in models:
        start = time.perf_counter()
        lm = load_model(name, str(device))
        loaded = time.perf_counter() - start
        encode_layers("A first pass warms the kernels up.", lm)
        print(f"\nencode with {name} on {device} (loaded in {loaded:.1f} s)")
        print(f"  {'tokens':>8}{'windows':>9}{'layer 0 s':>11}{'every layer s':>15}{'peak MiB':>10}")
        for n in sizes:
            body = text_of(n, lm.tokenizer, base_text(text))
            one = measure(lambda: encode(body, lm, layer=0), device, 1)
            every = measure(lambda: encode_layers(body, lm), device, 1)
            doc = encode(body, lm, layer=0)
            row = {"model": name, "n": doc.n, "windows": len(doc.windows), "load_s": loaded, "layer0_s": one["s"],
                   "every_layer_s": every["s"], "peak_bytes": every["peak_bytes"]}
            print(f"  {row['n']:>8,}{row['windows']:>9}{row['layer0_s']:>11.2f}{row['every_layer_s']:>15.2f}"
                  f"{row['peak_bytes'] / 2**20:>10.0f}", flush=True)
            rows.append(row)
    return rows


def in_model_times(n: int, text: str, device_name=None, mechanisms=None) -> list[dict]:
    """SmolLM2 over the first n tokens of the text: the layer's own attention computed through the swap, then
    each preset mechanism in every layer, with its perplexity, agreement and KL against the model's own,
    seconds and peak memory, and the scoring of its next tokens. Each pass is timed right after one of the
    model's own forward pass, its ratio against that one: on a shared machine the load moves between
    minutes, less between neighbours."""
    from explorer.analysis import in_model as im  # pandas: only here, so a bare GPU box runs the rest
    from explorer.core import forward

    device = pick_device(device_name)
    lm = load_model("smollm2", str(device))
    body = text_of(n, lm.tokenizer, base_text(text))
    im.baseline(body[:400], lm)  # the kernels warmed up
    base = im.baseline(body, lm, n)
    presets = {"dense, through the swap": ("dense", {}),
               **{k: v for k, v in im.PRESETS.items() if mechanisms is None or v[0] in mechanisms}}
    print(f"\nin the model: SmolLM2 over {base.n:,} tokens on {device}, every layer swapped; the model's own forward "
          f"pass {base.seconds:.1f} s")
    print(f"  {'step':<24}{'perplexity':>11}{'x dense':>9}{'agree':>7}{'KL':>8}{'dense s':>9}{'s':>8}{'x dense s':>10}"
          f"{'scoring s':>10}{'peak MiB':>10}")
    rows = []
    for name, (mech, params) in presets.items():
        start = time.perf_counter()
        forward.forward(lm, base.ids)
        dense = time.perf_counter() - start
        with Peak(device) as p:
            start = time.perf_counter()
            effect = im.swapped(base, mech, params)
            total = time.perf_counter() - start
        row = {"step": name, "mechanism": mech, "params": params, "dense_s": dense, "s": effect.seconds,
               "x_dense_s": effect.seconds / dense, "scoring_s": total - effect.seconds, "peak_bytes": p.bytes,
               "perplexity": effect.perplexity, "perplexity_dense": effect.perplexity_dense,
               "agreement": float(effect.agree.mean()), "kl_mean": float(effect.kl.mean())}
        rows.append(row)
        print(f"  {name:<24}{row['perplexity']:>11.2f}{row['perplexity'] / row['perplexity_dense']:>9.2f}"
              f"{row['agreement']:>7.3f}{row['kl_mean']:>8.4f}{dense:>9.1f}{row['s']:>8.1f}{row['x_dense_s']:>10.2f}"
              f"{row['scoring_s']:>10.1f}{row['peak_bytes'] / 2**20:>10.0f}", flush=True)
    return rows


def runs(mechanisms) -> dict[str, tuple[str, dict]]:
    """label -> (registry key, params): every mechanism's defaults and its variants, or only those asked for."""
    keys = [key for key in REGISTRY if key != "dense"] if mechanisms is None else mechanisms
    out = {key: (key, {}) for key in keys}
    out.update({label: spec for label, spec in VARIANTS.items() if spec[0] in keys and spec[0] in REGISTRY})
    return out


def print_step(row, name: str) -> None:
    """One line per step as soon as it is measured; the first step (SDPA) also prints the header."""
    mib = 2**20
    sdpa, m = row["steps"]["sdpa"], row["steps"][name]
    if name == "sdpa":
        enc = row["encode_s"]
        source = "synthetic q/k/v" if math.isnan(enc) else f"encode {enc:.2f} s, all heads"
        print(f"\nn = {row['n']:,}, {row['scope']} ({row['heads']}) on {row['device']}  ({source}; "
              f"load average {os.getloadavg()[0]:.1f})")
        print(f"  {'step':<26}{'first s':>10}{'steady s':>10}{'x SDPA':>9}{'cpu x SDPA':>12}{'peak MiB':>10}")
    if "error" in m:
        print(f"  {name:<26}failed: {m['error']}", flush=True)
        return
    print(f"  {name:<26}{m['first_s']:>10.3f}{m['s']:>10.3f}{m['s'] / sdpa['s']:>9.2f}"
          f"{m['cpu_s'] / max(sdpa['cpu_s'], 1e-9):>12.2f}{m['peak_bytes'] / mib:>10.0f}", flush=True)


def sweep_throughput(documents: int = 12, chars: int = 2500, workers=(1, 2)) -> list[dict]:
    """Documents per minute of the corpus sweep (explorer.sweep) on the same tasks: the plain local loop,
    then Ray with each worker count (a local Ray started once; its start is timed apart). A task is a
    piece of a bundled sample under MiniLM, every layer and head, dense and segmented, 128 rows;
    a Ray run includes its workers' model loads, part of what Ray costs against the loop."""
    import tempfile

    from explorer.sweep import sweep
    from explorer.sweep.engines import connect
    from explorer.sweep.inputs import Document, samples

    docs = [Document(f"{d.name} #{i}", f"{d.source}#{i}", d.text[i : i + chars])
            for d in samples() for i in range(0, len(d.text), chars)][:documents]
    options = dict(models=["minilm"], mechanisms=["segmented"], rows=128, stream=open(os.devnull, "w"))
    start = time.perf_counter()
    connect()
    ray_start = time.perf_counter() - start
    rows = []
    for engine, count in [("local", 1)] + [("ray", w) for w in workers]:
        with tempfile.TemporaryDirectory() as out:
            report = sweep(docs, out, engine=engine, workers=count, **options)
        rows.append({"engine": engine, "workers": count, "documents": report.ran, "s": report.seconds,
                     "per_minute": 60 * report.ran / report.seconds})
    print(f"\nsweep: {len(docs)} documents of {chars} characters, MiniLM, every layer and head, dense + segmented, "
          f"128 rows; Ray started in {ray_start:.1f} s (once)")
    print(f"  {'engine':<8}{'workers':>8}{'seconds':>10}{'docs/min':>10}{'x loop':>8}")
    for r in rows:
        print(f"  {r['engine']:<8}{r['workers']:>8}{r['s']:>10.1f}{r['per_minute']:>10.1f}"
              f"{r['per_minute'] / rows[0]['per_minute']:>8.2f}")
    return rows


def _length(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a length >= 1, or 'all'")
    return int(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=_length, nargs="+", default=None,
                        help="text tokens (the model adds its special tokens), or 'all': the whole --text; "
                             "--text python --n all is the Python reference, 128,977 tokens with MiniLM's two "
                             "(default: 1024 4096 16384; with --in-model 2048)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--repeat", type=int, default=2, help="calls per step: the first, then the best of the rest")
    parser.add_argument("--mechanisms", nargs="*", default=None,
                        help="registry keys (default: all; the flag alone: none, the statistics passes only)")
    parser.add_argument("--synthetic", action="store_true",
                        help="seeded Gaussian q/k/v instead of encoding a text with MiniLM")
    parser.add_argument("--text", choices=["sample", "python"], default="sample",
                        help="the text to encode: the longest project sample, or the Python language reference")
    parser.add_argument("--heads", choices=["one", "all", "both"], default="both", help="one head, all heads, or both")
    parser.add_argument("--preview", type=int, default=512, help="evenly spaced rows of the preview pass")
    parser.add_argument("--flex", action="store_true", help="also time FlexAttention block-sparse kernels")
    parser.add_argument("--compile-times", action="store_true",
                        help="CUDA: first report FlexAttention's compile times (fused pass, masked_stats) at n = 4,096")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference statistics pass (about 8 minutes at n = 129k on 2 cores)")
    parser.add_argument("--model-view", action="store_true",
                        help="also time the model view: every layer's forward pass, then its grid's statistics")
    parser.add_argument("--in-model", action="store_true",
                        help="time SmolLM2's forward pass with each mechanism in every layer instead (--n: tokens, "
                             "2,048 by default; --mechanisms: only those)")
    parser.add_argument("--encode", nargs="+", default=None, metavar="MODEL",
                        help="time encoding instead, per model (minilm, smollm2, an id or folder) and --n")
    parser.add_argument("--sweep", action="store_true",
                        help="time the corpus sweep instead: documents per minute, a local loop, Ray with 1 and 2 workers")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.n = args.n or ([2048] if args.in_model else [1024, 4096, 16384])
    unknown = set(args.mechanisms or []) - set(REGISTRY)
    if unknown:  # before any step: --in-model --mechanisms typo would time dense alone
        parser.error(f"unknown mechanisms {sorted(unknown)}")
    if args.synthetic and None in args.n:
        parser.error("--n all needs a text; --synthetic takes lengths")
    if not args.sweep:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.in_model:
        rows = in_model_times(args.n[0], args.text, args.device, args.mechanisms)
    elif args.sweep:
        rows = sweep_throughput()
    elif args.encode:
        rows = encode_times(args.encode, args.n, args.text, args.device)
    else:
        scopes = {"one": ("one head",), "all": ("all heads",), "both": ("one head", "all heads")}[args.heads]
        rows = bench(args.n, args.device, args.repeat, args.mechanisms, use_synthetic=args.synthetic, text=args.text,
                     scopes=scopes, preview=args.preview, flex=args.flex, reference=not args.no_reference,
                     compile_times=args.compile_times)
        if args.model_view:
            from explorer.analysis import model_view  # pandas: only here, so a bare GPU box runs the rest

            line = model_view.bench_line(base_text(args.text))
            print(f"\nmodel view, {line['tokens']:,} tokens, {line['layers']} layers x {line['heads']} heads, "
                  f"{line['queries']} queries: forward pass {line['forward_s']:.1f} s, statistics {line['stats_s']:.1f} s")
            rows.append({"model view": line})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
