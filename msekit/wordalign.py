"""Word times for given transcripts: forced alignment with pocketsphinx (English).

``align(signal, text)`` returns the words of ``text`` with [start, end) seconds, found by
pocketsphinx 5's aligner (``Decoder.set_align_text``; BSD-2, its en-US acoustic model and
CMU dictionary ship in the wheel). The text is normalised as for WER (lower case, no
punctuation, ``mr`` -> ``mister``); words missing from the dictionary are left out of the
alignment and get times interpolated between their aligned neighbours, so every word of the
text is returned, in order. Silence markers and fillers (``<sil>``, ``[NOISE]``) are dropped.

``match_words(text, asr_words, asr_times)`` is the alternative for any language: the words of
a given text take the times of the ASR words they match (edit-distance alignment).
"""

from __future__ import annotations

import numpy as np

from msekit.errors import MsekitError

SAMPLE_RATE = 16000
_FRAME_S = 0.01  # pocketsphinx frames: 10 ms


class Aligner:
    """A loaded pocketsphinx decoder (load once per worker; about 30 MB, under 0.5 s)."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise MsekitError("word alignment needs pocketsphinx; run `pip install "
                              "pocketsphinx==5.1.1` (or scripts/install.sh)") from None
        self.decoder = Decoder(loglevel="FATAL")

    def known(self, word: str) -> bool:
        return self.decoder.lookup_word(word) is not None

    def align(self, signal: np.ndarray, text: str,
              sample_rate: int = SAMPLE_RATE) -> tuple[list[str], np.ndarray]:
        """Align ``text`` to a mono float signal.

        Returns:
            (words, times): the normalised words of ``text`` and (W, 2) [start, end) seconds;
            ([], (0, 2)) when the text has no words or the aligner finds no path.
        """
        from msekit.asr import normalize_words

        words = normalize_words(text)
        inside = [w for w in words if self.known(w)]
        if not words or not inside or sample_rate != SAMPLE_RATE:
            return [], np.zeros((0, 2))
        pcm = (np.clip(np.asarray(signal, np.float32).reshape(-1), -1, 1) * 32767).astype("<i2")
        d = self.decoder
        try:
            d.set_align_text(" ".join(inside))
            d.start_utt()
            d.process_raw(pcm.tobytes(), full_utt=True)
            d.end_utt()
            segs = [(s.word, s.start_frame * _FRAME_S, (s.end_frame + 1) * _FRAME_S)
                    for s in d.seg()]
        except RuntimeError:
            return [], np.zeros((0, 2))
        segs = [s for s in segs if not s[0].startswith(("<", "[")) and s[0] != "sil"]
        segs = [(w.split("(")[0], a, b) for w, a, b in segs]  # "read(2)" -> "read"
        if [s[0] for s in segs] != inside:
            return [], np.zeros((0, 2))
        return words, _fill(words, [self.known(w) for w in words], segs)


def _fill(words: list[str], aligned: list[bool], segs: list[tuple[str, float, float]]) -> np.ndarray:
    """Times (W, 2) for every word: aligned ones from ``segs``, the others share the gap
    between their aligned neighbours evenly."""
    times = np.full((len(words), 2), np.nan)
    it = iter(segs)
    for i, ok in enumerate(aligned):
        if ok:
            _, a, b = next(it)
            times[i] = (a, b)
    i = 0
    while i < len(words):
        if not np.isnan(times[i, 0]):
            i += 1
            continue
        j = i
        while j < len(words) and np.isnan(times[j, 0]):
            j += 1
        lo = times[i - 1, 1] if i > 0 else (times[j, 0] if j < len(words) else 0.0)
        hi = times[j, 0] if j < len(words) else lo
        edges = np.linspace(lo, hi, j - i + 1)
        times[i:j, 0], times[i:j, 1] = edges[:-1], edges[1:]
        i = j
    return times


def match_words(text: str, asr_words: list[str],
                asr_times: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Times for the words of ``text`` from matching ASR words (edit-distance alignment).

    Words with no matching ASR word get times interpolated between matched neighbours.

    Returns:
        (words, times (W, 2)); ([], (0, 2)) when nothing matches.
    """
    from msekit.asr import normalize_words

    ref = normalize_words(text)
    hyp = [normalize_words(w) for w in asr_words]
    hyp_flat = [(" ".join(h), k) for k, h in enumerate(hyp) if h]
    n, m = len(ref), len(hyp_flat)
    if not n or not m:
        return [], np.zeros((0, 2))
    cost = np.zeros((n + 1, m + 1), np.int32)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (ref[i - 1] != hyp_flat[j - 1][0]))
    i, j, pairs = n, m, {}
    while i and j:  # trace back the matches
        if cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp_flat[j - 1][0]):
            if ref[i - 1] == hyp_flat[j - 1][0]:
                pairs[i - 1] = hyp_flat[j - 1][1]
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    if not pairs:
        return [], np.zeros((0, 2))
    times = np.asarray(asr_times, np.float64).reshape(-1, 2)
    segs = [(ref[i], *times[pairs[i]]) for i in sorted(pairs)]
    return ref, _fill(ref, [i in pairs for i in range(n)], segs)
