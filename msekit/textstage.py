"""The text stage of extraction: ASR for samples without a transcript, word times for the rest.

Per sample (``--asr``):
    * ``auto`` (default): a sample with a given transcript keeps it (``text_source`` ``given``);
      without one it is transcribed (``asr``). Given text without word times gets them by forced
      alignment (pocketsphinx, English text) so ``msekit align --mode word`` works for it.
    * ``always``: every sample is transcribed. Given transcripts still win over ASR text: they
      keep their text and take word times from the ASR words they match (any language),
      falling back to forced alignment; samples without one get the ASR text.
    * ``none``: no ASR; given text is still aligned (``AsrConfig.align``).

Silence or music gives an empty transcript and a warning, never a failure. The stage runs in
the extraction workers; the models load once per process (the ASR model in the pool
initializer, so a broken model fails the run before any work; the aligner on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from msekit.asr import AsrConfig, AsrResult, Transcriber
from msekit.wordalign import Aligner, match_words

_LOADED: dict[str, Any] = {}


@dataclass(frozen=True)
class TextJob:
    """What a worker needs to know of one sample's given transcript."""

    config: AsrConfig
    text: str = ""
    given: bool = False
    has_words: bool = False

    @property
    def needed(self) -> bool:
        return self.wants_asr or self.wants_align

    @property
    def wants_asr(self) -> bool:
        mode = self.config.mode
        return mode == "always" or (mode == "auto" and not self.given)

    @property
    def wants_align(self) -> bool:
        return self.config.align and self.given and bool(self.text) and not self.has_words


def _transcriber(config: AsrConfig) -> Transcriber:
    key = repr(config)
    if _LOADED.get("asr_key") != key:
        _LOADED["asr"], _LOADED["asr_key"] = Transcriber(config), key
    return _LOADED["asr"]


def _aligner() -> Aligner:
    if "align" not in _LOADED:
        _LOADED["align"] = Aligner()
    return _LOADED["align"]


def preload(config: AsrConfig, asr: bool = True) -> None:
    """Load the ASR model when the run needs it, once per process (worker initializer), so a
    broken model fails the run at setup. The aligner (0.5 s) loads on first use."""
    if asr and config.mode != "none":
        _transcriber(config)


def run(job: TextJob, sample_id: str, signal: np.ndarray | None,
        warnings: list[str]) -> dict[str, Any]:
    """The text fields of one sample (``Sample`` keyword arguments), from its 16 kHz signal.

    Returns:
        {} when there is nothing to do, else some of text, words, word_times, word_probs,
        text_source, asr_model, language, asr_logprob, asr_no_speech.
    """
    if not job.needed:
        return {}
    if signal is None:  # no audio stream: nothing to transcribe or align
        return {}
    out: dict[str, Any] = {}
    res: AsrResult | None = None
    if job.wants_asr:
        tr = _transcriber(job.config)
        res = tr.transcribe(signal)
        out.update(asr_model=tr.info.name, language=res.language,
                   asr_logprob=res.avg_logprob, asr_no_speech=res.no_speech_prob)
        if not job.given:
            out.update(text=res.text, words=res.words, word_times=res.times,
                       word_probs=res.probs, text_source="asr")
            if not res.text:
                warnings.append(f"{sample_id}: no speech found (silence or music?); empty "
                                "transcript")
    if job.wants_align:
        words, times = (match_words(job.text, res.words, res.times) if res is not None and res.words
                        else ([], np.zeros((0, 2))))
        if not len(words) and _alignable(job):
            words, times = _aligner().align(signal, job.text)
        if len(words):
            out.update(words=words, word_times=times)
        else:
            warnings.append(f"{sample_id}: could not give word times to the given transcript "
                            "(not English text, or no match in the audio)")
    return out


def _alignable(job: TextJob) -> bool:
    """pocketsphinx's model is English: align only English (or unknown-language) Latin text."""
    lang = job.config.language
    return lang in ("auto", "en") and sum(c.isascii() for c in job.text) >= 0.9 * len(job.text)


def sample_fields(text: str, given: bool, found: dict[str, Any]) -> dict[str, Any]:
    """A sample's text fields: the given text (source ``given``) overlaid by the stage's output."""
    return {"text": text, "text_source": "given" if given else "", **found}
