"""Where to compute, and how many query rows fit in memory at once."""
from __future__ import annotations

import os

import torch

_CPU_BUDGET = 512 * 2**20  # bytes for one chunk's score buffers on the CPU
_GPU_SHARE = 0.25  # share of free GPU memory one chunk may take


def pick_device(name: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU, unless `name` asks for one explicitly."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"device {name!r} is not a torch device name") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} requested but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _GPU_SHARE)
    return _CPU_BUDGET


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on the device now: CUDA's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class MemoryNeeded(ValueError):
    """A computation refused before it starts because it would not fit the memory it may take."""


def check_fits(need: int, device: torch.device, what: str, share: float = 1.0, advice: str = "") -> None:
    """ValueError naming both sizes when `what` needs more than `share` of the bytes the device has
    free: refused before allocating, since the allocator's own failure is a RuntimeError, or the
    machine swaps. advice: what the caller can change, appended to the message."""
    free = free_bytes(torch.device(device))
    if need > free * share:
        allowed = (f"more than the {share:.0%} of the {free / 2**30:,.1f} GiB free that it may take "
                   "(the rest is for the pages' own work)" if share < 1 else f"and {free / 2**30:,.1f} GiB is free")
        raise MemoryNeeded(f"{what} needs about {need / 2**30:,.1f} GiB of memory, {allowed}"
                         + (f": {advice}" if advice else ""))


def chunk_rows(n_keys: int, heads: int, device: torch.device, buffers: int = 4) -> int:
    """Query rows per chunk so that `buffers` score-sized tensors fit the budget."""
    per_row = max(1, heads * n_keys * 4 * buffers)
    return max(1, min(n_keys, _available_bytes(device) // per_row))


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a measured time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
