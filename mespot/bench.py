"""`mespot bench`: what this machine does fast, measured in a minute, before a long run.

Times the two costly stages on the chosen device:
- optical flow: face pairs of the size extraction will crop (`--resize`), per flow backend and
  batch size, in pairs per second (the median of `--repeats` calls after a warm-up call);
- training: one AUW-GCN training step (forward, backward, AdamW) on a batch of CAS(ME)^2-shaped
  windows, and from it an estimate of a CAS(ME)^2-sized LOSO run (22 folds x 100 epochs of about
  325 windows), labelled as an estimate: benchmarks/train_speed.py measures whole runs (on this
  project's 2-core CPU machine the estimate said 17-19 min where the whole run measured 15).
Prints a table and which flags to use, and writes the numbers with the machine and versions
as JSON with `--out`.
"""

from __future__ import annotations

import statistics
import time

# CAS(ME)^2: 22 folds x 100 epochs x about 325 training windows per fold, in batches of 128
LOSO_STEPS = round(22 * 100 * 325 / 128)


def time_median(call, repeats: int, sync=None) -> float:
    """Median wall seconds of `repeats` calls of `call` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        call()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flow_rates(size: int, device: str, repeats: int) -> list[dict]:
    """Pairs per second of every flow backend usable on `device` at size x size faces."""
    from flowcore.flow import TVL1Params, available_backends, backend_named, compute_flow
    from flowcore.flow.synthetic import face_pairs

    sync = _sync(device)
    rows = []
    for backend in available_backends():
        try:
            backend_named(backend).check_device(device)
        except ValueError:  # opencv off the CPU, cuda off a GPU
            continue
        batches = (([1, 16, 128] if device != "cpu" else [1, 4, 16])
                   if backend_named(backend).batched else [2])
        for batch in batches:
            first, second = face_pairs((size, size), batch)
            seconds = time_median(
                lambda: compute_flow(
                    first,
                    second,
                    params=TVL1Params(),
                    backend=backend,
                    device=device,
                ),
                repeats,
                sync,
            )
            rows.append(
                {
                    "backend": backend,
                    "device": device,
                    "batch": batch,
                    "size": size,
                    "pairs_per_s": batch / seconds,
                }
            )
    return rows


def training_step(device: str, repeats: int, batch: int = 128) -> dict:
    """Seconds of one training step on `batch` windows of 256 + 2 x 7 rows, and the estimate of a
    CAS(ME)^2-sized LOSO run from it."""
    import numpy as np
    import torch

    from spotting.losses import LossParams, spotting_loss
    from spotting.model import AUWGCN

    generator = torch.Generator().manual_seed(0)
    model = AUWGCN(np.eye(12, dtype=np.float32)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.01)
    x = torch.randn(batch, 270, 12, 2, generator=generator).to(device)
    start_end = torch.randint(0, 3, (batch, 2, 256), generator=generator).to(device)
    apex = torch.rand(batch, 2, 256, generator=generator).to(device)
    action = (torch.rand(batch, 2, 256, generator=generator) > 0.9).float().to(device)

    def step():
        loss, _ = spotting_loss(model(x)[:, :, 7:263], start_end, apex, action, LossParams())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    seconds = time_median(step, repeats, _sync(device))
    return {
        "device": device,
        "batch_windows": batch,
        "seconds_per_step": seconds,
        "loso_casme2_estimate_s": seconds * LOSO_STEPS,
        "loso_steps": LOSO_STEPS,
    }


def _sync(device: str):
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None
