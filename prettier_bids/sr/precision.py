"""The network's arithmetic at inference (``--precision``): the one owner of its names and of what ``auto`` means;
and :data:`BATCH_SIZE`, the windows per forward pass every command defaults to (``--batch-size``).

``auto`` picks bf16 where the hardware computes bfloat16 natively (:func:`native_bf16`), else fp32. Under bf16
only the network's residual is reduced-precision: the cubic base it is added to
(``models.common.LRGridGenerator.forward``), the merge of the windows, the consistency check and the projection
stay fp32. This module imports torch only when asked about hardware, so command-line parsers can use
:data:`PRECISIONS` without loading it.
"""

from __future__ import annotations

#: ``--precision`` values; ``auto`` is the default of every command.
PRECISIONS = ("auto", "fp32", "bf16")
#: Windows of three planes per forward pass (``--batch-size``): memory against speed; the default everywhere.
BATCH_SIZE = 8

#: CUDA compute capability from which bfloat16 runs natively (Ampere); older GPUs only emulate it.
CUDA_BF16_CAPABILITY = (8, 0)


def native_bf16(device="cpu"):
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:N`` or a torch.device) computes bfloat16 natively: a CPU
    with AVX512-BF16 or AMX, or an NVIDIA GPU of compute capability 8.0 or later (elsewhere bf16 is emulated,
    slower than fp32)."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda":
            if not torch.cuda.is_available() or torch.version.hip is not None:
                return False
            index = device.index if device.index is not None else torch.cuda.current_device()
            return tuple(torch.cuda.get_device_capability(index)) >= CUDA_BF16_CAPABILITY
        if device.type == "cpu":
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError, AssertionError):  # a torch without the probes, a bad index: stay exact
        return False
    return False


def resolve_precision(precision, device="cpu"):
    """``fp32`` or ``bf16``: the arithmetic ``precision`` (one of :data:`PRECISIONS`) means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def precision_note(precision, device="cpu"):
    """How benchmark tables say which arithmetic the network ran in."""
    ran = resolve_precision(precision, device)
    return f"network arithmetic {ran}" + (" (--precision auto on this machine)" if precision == "auto" else "")
