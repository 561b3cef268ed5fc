"""Training-time augmentation of the audio and video frames: Gaussian noise.

Features reach the adapter standardized (train-split mean and std), so ``std`` is in units of
each feature's spread. Noise is added to the real frames only (padding stays zero) and comes
from a generator seeded by ``(seed, epoch, micro-batch, rank)``, so a resumed run draws the
very same noise as an uninterrupted one and the ranks of a distributed run draw independent
noise. For a linear map, additive input noise of variance s^2 acts as an L2 penalty on the
weights (Bishop 1995). On the 8-emotion RAVDESS stand-in (bench/bench_cv.py) it did not
change the adapter's cross-validated accuracy, so it is off by default.
"""

from __future__ import annotations

from typing import Any

import torch

MODALITIES = ("audio", "video")


def noise_generator(seed: int, epoch: int, micro: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for micro-batch ``micro`` of ``epoch`` on ``rank``: the same numbers on every resume."""
    p = 1_000_003
    return torch.Generator().manual_seed((((seed * p + epoch) * p + micro) * p + rank) % 2**63)


def add_input_noise(batch: dict[str, Any], std: float, gen: torch.Generator) -> dict[str, Any]:
    """A copy of ``batch`` whose audio/video frames carry N(0, std^2) noise on real frames.

    Args:
        batch: A collated batch: ``audio`` (B, T, D) and ``audio_lengths`` (B,), same for video.
        std: Noise standard deviation; 0 returns ``batch`` itself.
        gen: The CPU generator to draw from (:func:`noise_generator`).

    Returns:
        The batch, with new ``audio``/``video`` tensors; other entries are shared.
    """
    if std <= 0:
        return batch
    out = dict(batch)
    for m in MODALITIES:
        x = batch.get(m)
        if not isinstance(x, torch.Tensor) or x.numel() == 0:
            continue
        B, T, _ = x.shape
        lengths = batch.get(f"{m}_lengths")
        lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths).reshape(-1)
        real = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float32)  # (B, T, D)
        out[m] = x + (noise * std * real.unsqueeze(-1)).to(x.device, x.dtype)
    return out
