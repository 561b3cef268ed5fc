"""An exponential moving average of the adapter's weights (``--ema DECAY``, off by default).

After every optimizer step the average moves towards the trained weights,
``avg <- decay * avg + (1 - decay) * w`` (torch's ``AveragedModel`` with its EMA rule; the first
step copies). Validation, the saved best adapter and so every prediction use the average; the
optimizer keeps stepping the raw weights. On a few dozen clips an epoch is a handful of steps and
the weights of consecutive epochs differ a lot, so the epoch that early stopping keeps is partly
luck of the last step; the average is a smoother model of the same run. The average is part of
the checkpoint, so a killed and resumed run stays bit-identical.

Examples:
    >>> import torch
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> avg = WeightAverage(net, decay=0.5)
    >>> for w in (1.0, 3.0):
    ...     _ = net.weight.data.fill_(w)
    ...     avg.update(net)
    >>> with avg.applied(net):
    ...     float(net.weight.detach())
    2.0
    >>> float(net.weight.detach())
    3.0
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

AVERAGE_FILE = "average.safetensors"


class WeightAverage:
    """The running average of a module's parameters (the module's structure, its own copy).

    Args:
        module: the bare adapter (not a DDP wrapper); every rank averages the same weights.
        decay: the weight of the old average per update, in (0, 1).
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.model = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def update(self, module: torch.nn.Module) -> None:
        """One step of the average towards ``module``'s current weights."""
        self.model.update_parameters(module)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and the update count, as tensors (for the checkpoint)."""
        return {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(tensors)

    @contextmanager
    def applied(self, module: torch.nn.Module) -> Iterator[None]:
        """Within the block, ``module`` holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        with torch.no_grad():
            module.load_state_dict(self.model.module.state_dict())
        try:
            yield
        finally:
            with torch.no_grad():
                module.load_state_dict(own)
