"""The store's row types and column names, shared by its writer and readers.

``Modality`` and ``Sample`` are what extractors and importers hand to ``StoreWriter`` and what
``StoreReader`` returns; the layout they map to is described in ``msekit.store`` and
docs/store-schema.md. Import them from ``msekit.store``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from msekit.errors import StoreError

STR = h5py.string_dtype("utf-8")
SAMPLE_STR_FIELDS = ("id", "source", "text", "label", "split", "group")
OPTIONAL_STR_FIELDS = ("source_hex",)  # absent in stores of older msekit versions
FAILURE_FIELDS = ("id", "path", "stage", "reason")
# Per-sample transcript metadata (absent in stores written before them: read as defaults).
TEXT_STR_FIELDS = ("text_source", "asr_model", "language")
TEXT_F8_FIELDS = ("asr_logprob", "asr_no_speech")


@dataclass
class Modality:
    """One modality of one sample: frames with their times and validity.

    Attributes:
        data: (T, D) float32 features, never NaN (masked frames hold zeros).
        times: (T, 2) float64 [start, end) of each frame in seconds.
        mask: (T,) bool, True where the frame is valid.
    """

    data: np.ndarray
    times: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1, 2)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if self.data.ndim != 2 or not (len(self.data) == len(self.times) == len(self.mask)):
            raise StoreError(
                f"modality arrays disagree: data {self.data.shape}, times {self.times.shape}, "
                f"mask {self.mask.shape}; expected (T, D), (T, 2), (T,)"
            )

    @classmethod
    def empty(cls, dim: int) -> Modality:
        return cls(np.zeros((0, dim), np.float32), np.zeros((0, 2)), np.zeros(0, bool))


@dataclass
class Sample:
    """Everything the store keeps about one sample."""

    id: str
    text: str = ""
    label: str = ""
    split: str = ""
    group: str = ""
    source: str = ""
    source_hex: str = ""
    duration: float = 0.0
    token_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    words: list[str] = field(default_factory=list)
    word_times: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    modalities: dict[str, Modality] = field(default_factory=dict)
    word_probs: np.ndarray | None = None  # (W,) float32; None: NaN for every word
    text_source: str = ""  # given | asr | '' (no text)
    asr_model: str = ""
    language: str = ""
    asr_logprob: float = float("nan")
    asr_no_speech: float = float("nan")

    def probs(self) -> np.ndarray:
        """(W,) word probabilities, NaN where unknown."""
        if self.word_probs is None:
            return np.full(len(self.words), np.nan, np.float32)
        return np.asarray(self.word_probs, np.float32).reshape(-1)


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of extraction settings (JSON with sorted keys)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ragged_offsets(s: h5py.Group, prefix: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) of the first n samples for one ragged array.

    Rows are appended in sample order, so the offsets are the exclusive cumsum of the lengths.
    msekit 0.1 wrote a stray offset row for every commit that held failures only, which shifted
    the stored offsets; when the offset column is longer than the length column they are
    recomputed from the lengths.
    """
    length = s[f"{prefix}_length"][:n].astype(np.int64)
    off_ds = s[f"{prefix}_offset"]
    if off_ds.shape[0] > s[f"{prefix}_length"].shape[0]:
        return np.cumsum(length) - length, length
    return off_ds[:n].astype(np.int64), length
