"""Where a run computes (``--device auto|cpu|cuda[:i]``) and how its tensors get there.

A run's tensors (features, labels, models, optimiser state, the per-epoch batch indices) live on the run's device;
every random number is drawn from the run's CPU ``torch.Generator`` and the draws are moved, so a run draws the same
numbers on every device (docs/TRAINER.md, "Devices"). Host-to-device copies of what is drawn per step go through
pinned memory with ``non_blocking=True``: the host does not wait for the device's queued work within an epoch; it
waits when the epoch's curves and evaluation are read back.
"""

from __future__ import annotations

import re

import torch

DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")
"""The values --device takes."""


def check_spec(spec: str, option: str = "--device") -> None:
    """A ValueError naming ``option`` when ``spec`` is not auto, cpu, cuda or cuda:I (nothing is asked of torch)."""
    if not isinstance(spec, str) or not DEVICE_SPEC.fullmatch(spec):
        raise ValueError(f"{option} {spec!r}: use auto, cpu, cuda or cuda:I (I a GPU index)")


def cuda_seen() -> str:
    """What torch sees of CUDA, for error messages: 'torch 2.x+cpu is built without CUDA', or the device count."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    n = torch.cuda.device_count()
    return f"torch sees {n} CUDA device{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})"


def resolve(spec: str | torch.device, option: str = "--device") -> torch.device:
    """The torch.device of ``spec``: 'auto' is cuda (the current CUDA device) when torch sees one, else cpu. A
    device torch does not see is a one-line ValueError naming ``option`` and what torch sees."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    check_spec(spec, option)
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{option} {spec}: {cuda_seen()}; use {option} cpu (or auto)")
    index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"{option} {spec}: {cuda_seen()}; use an index below {torch.cuda.device_count()}")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """'cpu (N threads)' or 'cuda:0 (NVIDIA H200)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


PIN_BYTES = 16 << 20
"""Host tensors up to this size are copied to a CUDA device through page-locked memory (the per-step draws and
batch indices): such a copy is queued behind the device's work instead of waiting for it."""


def place(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """``t`` on ``device`` (itself when it is there already; None stays None). A small host tensor bound for CUDA
    goes through pinned memory with ``non_blocking=True``, so the host does not wait for the device's queue (torch's
    pinned-memory cache keeps the buffer until the copy is done); a large one (features, once per run) is copied
    directly."""
    if t is None or t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu" and t.numel() * t.element_size() <= PIN_BYTES:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)


def place_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with its parameters and buffers on ``device`` (in place; returned)."""
    return module.to(device)


__all__ = ["DEVICE_SPEC", "PIN_BYTES", "check_spec", "cuda_seen", "resolve", "describe", "place", "place_module"]
