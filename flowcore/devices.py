"""Where work may run: the one check of a device name against this machine."""

from __future__ import annotations


def check_device(device: str) -> None:
    """ValueError, before any work, for a device name other than cpu, cuda or cuda:N, or a CUDA
    device this machine does not have."""
    device = str(device)
    if not device.startswith("cuda"):
        if device != "cpu":
            raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
