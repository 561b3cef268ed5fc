"""msekit: from raw videos to multimodal sentiment and emotion models on a frozen LLM.

The Python API mirrors the CLI: ``extract`` (videos -> feature store), ``train`` (store + frozen
LLM -> adapter), ``evaluate`` and ``predict``. The adapter itself is ``AdapterConfig`` +
``MSEAdapter``. Heavy modules load on first use, so ``import msekit`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

import types

from msekit.errors import MsekitError  # noqa: E402

__all__ = ["AdapterConfig", "ExtractConfig", "MSEAdapter", "MsekitError", "TrainConfig", "__version__",
           "evaluate", "extract", "predict", "resolve_config", "train"]

class _CallableModule(types.ModuleType):
    """A stage module that can be called as its function: ``msekit.train(cfg)`` is
    ``msekit.train.train(cfg)``. (Importing ``msekit.train`` binds the module under that name,
    so the module itself must answer the call.)"""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def callable_module(name: str) -> None:
    """Makes the module ``name`` callable as its namesake function (see ``_CallableModule``)."""
    import sys

    sys.modules[name].__class__ = _CallableModule


# name -> module that defines it; loaded on first use (PEP 562).
_LAZY = {
    "AdapterConfig": "msekit.adapter", "MSEAdapter": "msekit.adapter",
    "ExtractConfig": "msekit.extract", "TrainConfig": "msekit.train", "resolve_config": "msekit.train",
}
_STAGES = ("extract", "train", "evaluate", "predict")  # callable modules, see _CallableModule


def __getattr__(name: str):
    import importlib

    if name in _STAGES:
        return importlib.import_module(f"msekit.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'msekit' has no attribute {name!r}")
