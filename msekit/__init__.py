"""msekit: from raw videos to multimodal sentiment and emotion models on a frozen LLM.

The Python API mirrors the CLI: ``extract`` (videos -> feature store), ``train`` (store + frozen
LLM -> adapter), ``evaluate`` and ``predict``. The adapter itself is ``AdapterConfig`` +
``MSEAdapter``. Heavy modules load on first use, so ``import msekit`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from msekit.errors import MsekitError  # noqa: E402

__all__ = ["AdapterConfig", "MSEAdapter", "MsekitError", "__version__"]


def __getattr__(name: str):  # PEP 562: import torch only when the adapter is asked for
    if name in ("AdapterConfig", "MSEAdapter"):
        from msekit import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module 'msekit' has no attribute {name!r}")
