"""Where to compute, and how many query rows fit in memory at once."""
from __future__ import annotations

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


def chunk_rows(n_keys: int, heads: int, device: torch.device, buffers: int = 4) -> int:
    """Query rows per chunk so that `buffers` score-sized tensors fit the budget."""
    per_row = max(1, heads * n_keys * 4 * buffers)
    return max(1, min(n_keys, _available_bytes(device) // per_row))


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a measured time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
