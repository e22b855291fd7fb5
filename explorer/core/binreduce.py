"""The score block's reductions in one compiled pass per row: bin maxima, row maximum, the
weights exp(s - max) written in place, their bin sums and sum e * (s - max) (the entropy's).

Why C: in eager torch these are five calls (amax, amax, sub_, exp_, sum), each streaming the
whole block (256 rows x n scores: 16 MB at n = 16k, beyond a core's cache) through memory, and
each a rendezvous of every CPU thread, which on a loaded machine costs more than the work.
Here one thread takes one row at a time, whose scores (64 KB at n = 16k) stay in its cache from
the first read to the last; the entropy's sum comes with the exp, so no [v | k] matmul or second
pass over the weights is needed. torch.compile (inductor's C++) was tried first: it kept three
loops over the whole block and was no faster than eager here (2-core CPU, torch 2.13).

The source below is compiled once per machine with the C compiler (`cc`, or $CC) into
~/.cache/attention-explorer/kernels (EXPLORER_KERNEL_DIR), keyed by the source, flags and CPU, and loaded
with ctypes (calls release the GIL). No compiler, or a failed build: `available()` is False and
the statistics pass keeps its eager path (explorer.core.binned), which computes the same numbers.
EXPLORER_KERNEL=0 turns the compiled path off. exp is a polynomial of degree 7 after range
reduction (about 1 ulp, as torch's own), exactly 0 below exp(-87.3), and for masked (-inf) scores.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

LOG = logging.getLogger(__name__)

MAX_K = 64  # largest top-k the compiled pass keeps (the C source's MAX_K); more: the eager pass
SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_K @MAX_K@

static inline float exp_nonpositive(float x) {
    /* exp(x) for x <= 0: 2^k * p(r), x = k ln2 + r, |r| <= ln2 / 2; 0 below -87.3 and at -inf. */
    float xc = x < -87.3f ? -87.3f : x;
    float k = nearbyintf(xc * 1.44269504088896341f);
    float r = xc - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
    float p = 1.98412698412698413e-4f;
    p = p * r + 1.38888888888888889e-3f;
    p = p * r + 8.33333333333333333e-3f;
    p = p * r + 4.16666666666666667e-2f;
    p = p * r + 1.66666666666666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.3f ? 0.0f : p * scale;
}

static void top_k(const float *row, const float *bin_max, const float *padding, int64_t bins, int64_t width,
                  int64_t kk, int64_t *slot, float *value) {
    /* The kk largest weights of one row, from its kk bins with the largest maxima (each of the true
       top-k lies in such a bin), largest first; padding slots (padding -1) rank below any weight. */
    int64_t best_bin[MAX_K];
    float best_max[MAX_K];
    int64_t picked = kk < bins ? kk : bins, have = 0;
    for (int64_t b = 0; b < bins; b++) {
        float m = bin_max[b];
        if (have == picked && !(m > best_max[have - 1])) continue;
        int64_t at = have < picked ? have++ : have - 1;
        while (at > 0 && m > best_max[at - 1]) { best_max[at] = best_max[at - 1]; best_bin[at] = best_bin[at - 1]; at--; }
        best_max[at] = m; best_bin[at] = b;
    }
    have = 0;
    for (int64_t c = 0; c < picked; c++) {
        int64_t first = best_bin[c] * width;
        for (int64_t j = first; j < first + width; j++) {
            float x = row[j] + padding[j];
            if (have == kk && !(x > value[have - 1])) continue;
            int64_t at = have < kk ? have++ : have - 1;
            while (at > 0 && x > value[at - 1]) { value[at] = value[at - 1]; slot[at] = slot[at - 1]; at--; }
            value[at] = x; slot[at] = j;
        }
    }
}

void bin_reduce(float *s, int64_t rows, int64_t bins, int64_t width, float *bin_max, float *top,
                float *bin_sum, float *spent, const float *padding, int64_t kk, int64_t *slot, float *value,
                int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        float *row = s + i * bins * width;
        float m = -INFINITY;
        for (int64_t b = 0; b < bins; b++) {
            float *cell = row + b * width;
            float bm = -INFINITY;
            #pragma omp simd reduction(max:bm)
            for (int64_t j = 0; j < width; j++) bm = cell[j] > bm ? cell[j] : bm;
            bin_max[i * bins + b] = bm;
            m = bm > m ? bm : m;
        }
        top[i] = m;
        double spent_row = 0.0;
        for (int64_t b = 0; b < bins; b++) {
            float *cell = row + b * width;
            float sum = 0.0f, acc = 0.0f;
            #pragma omp simd reduction(+:sum, acc)
            for (int64_t j = 0; j < width; j++) {
                float t = cell[j] - m;
                float e = t > -INFINITY ? exp_nonpositive(t) : 0.0f;
                cell[j] = e;
                sum += e;
                acc += e > 0.0f ? e * t : 0.0f;
            }
            bin_sum[i * bins + b] = sum;
            spent_row += acc;
        }
        spent[i] = (float)spent_row;
        top_k(row, bin_max + i * bins, padding, bins, width, kk, slot + i * kk, value + i * kk);
    }
}
""".replace("@MAX_K@", str(MAX_K))
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
_LOCK = threading.Lock()
_LOADED: list = []  # [the function, or None when it could not be built]
compile_seconds = 0.0  # what building (or finding) the library took in this process
built_now = False  # whether this process compiled it (else it was found built)


def _folder() -> Path:
    return Path(os.environ.get("EXPLORER_KERNEL_DIR") or Path.home() / ".cache" / "attention-explorer" / "kernels")


def _cpu() -> str:
    """What -march=native compiles for: a library built on another CPU (a shared home folder) is not loaded."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _build() -> Path:
    """The shared library of SOURCE for this machine, compiled unless one is there already."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OSError("no C compiler (cc, gcc or $CC)")
    tag = hashlib.sha256((SOURCE + " ".join(FLAGS) + compiler + _cpu()).encode()).hexdigest()[:16]
    target = _folder() / f"binreduce-{tag}.so"
    global built_now
    if target.exists():
        return target
    built_now = True
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source, built = Path(tmp) / "binreduce.c", Path(tmp) / "binreduce.so"
        source.write_text(SOURCE)
        subprocess.run([compiler, *FLAGS, str(source), "-o", str(built), "-lm"], check=True, capture_output=True,
                       timeout=120)
        shutil.move(str(built), target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)  # whole or not at all, with two builders
    return target


def _function():
    """The compiled bin_reduce, built or loaded on the first call (once per process), or None."""
    global compile_seconds
    with _LOCK:
        if not _LOADED:
            start = time.perf_counter()
            fn = None
            if os.environ.get("EXPLORER_KERNEL", "1") != "0":
                try:
                    fn = ctypes.CDLL(str(_build())).bin_reduce
                    fn.restype = None
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, *[ctypes.c_void_p] * 5,
                                   ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
                except (OSError, subprocess.SubprocessError) as err:
                    LOG.warning("compiled statistics kernel unavailable, the eager pass is used: %s", err)
            compile_seconds = time.perf_counter() - start
            _LOADED.append(fn)
        return _LOADED[0]


def available(scores: torch.Tensor, kk: int) -> bool:
    """Whether the compiled pass can reduce these scores (float32, CPU, contiguous; top-k of at most
    MAX_K), building it on the first call."""
    return (scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.is_contiguous()
            and kk <= MAX_K and _function() is not None)


def bin_reduce(s: torch.Tensor, bins: int, width: int, padding: torch.Tensor, kk: int):
    """s [..., bins * width] scores, contiguous float32 on the CPU: made exp(s - row max) in place.
    padding [bins * width]: -1 at padding slots, 0 elsewhere. Returns the bin maxima of the scores
    [..., bins], the row maxima [...], the bin sums of the weights [..., bins], sum e * (s - max)
    [...], and the kk largest weights' slots and weights [..., kk], largest first."""
    rows = s.numel() // (bins * width)
    lead = s.shape[:-1]
    bin_max, bin_sum = s.new_empty(*lead, bins), s.new_empty(*lead, bins)
    top, spent = s.new_empty(lead), s.new_empty(lead)
    slot = torch.empty(*lead, kk, dtype=torch.long)
    value = s.new_empty(*lead, kk)
    padding = padding[: bins * width].contiguous()
    _function()(s.data_ptr(), rows, bins, width, bin_max.data_ptr(), top.data_ptr(), bin_sum.data_ptr(),
                spent.data_ptr(), padding.data_ptr(), kk, slot.data_ptr(), value.data_ptr(), torch.get_num_threads())
    return bin_max, top, bin_sum, spent, slot, value


def eager(fn, *args, **kwargs):
    """fn(*args, **kwargs) with the compiled reductions off: the bench's comparison (not thread-safe)."""
    keep = _function()
    _LOADED[0] = None
    try:
        return fn(*args, **kwargs)
    finally:
        _LOADED[0] = keep
