"""msekit: from raw videos to multimodal sentiment and emotion models on a frozen LLM."""

from __future__ import annotations

__version__ = "0.1.0"

from msekit.errors import MsekitError  # noqa: E402

__all__ = ["MsekitError", "__version__"]
