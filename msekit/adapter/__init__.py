"""The MSE-Adapter: config, module, and adapter-only save/load."""

from __future__ import annotations

from msekit.adapter.config import AdapterConfig
from msekit.adapter.io import load_adapter, read_adapter_meta, save_adapter
from msekit.adapter.model import MSEAdapter, trainable_parameters_line

__all__ = [
    "AdapterConfig",
    "MSEAdapter",
    "load_adapter",
    "read_adapter_meta",
    "save_adapter",
    "trainable_parameters_line",
]
