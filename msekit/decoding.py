"""Reading numbers out of generated answers, and the grammar of constrained number decoding.

A regression label is written in one known format (``f"{y:.1f}"`` or ``f"{y:+.1f}"``, see
:mod:`msekit.prompts`). Constrained decoding lets the LLM write only tokens that keep its answer
a prefix of such a number (an optional leading space, an optional sign, at most as many integer
digits as the value range needs, a point, one decimal), so an answer always parses and
decoding stops as soon as every row holds a complete number, instead of running a fixed
number of steps or waiting for an EOS that an untrained adapter never writes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from msekit.parsing import parse_number  # noqa: F401 - re-exported: decoding reads numbers back

NUMBER_CHARS = frozenset("0123456789+-. ")


def integer_digits(value_range: tuple[float, float] | None) -> int:
    """Integer digits a label in ``value_range`` can have (4 when the range is unbounded).

    Examples:
        >>> integer_digits((-3.0, 3.0)), integer_digits((-100, 50)), integer_digits(None)
        (1, 3, 4)
    """
    if value_range is None or not all(math.isfinite(v) for v in value_range):
        return 4
    return max(1, len(str(int(max(abs(float(v)) for v in value_range)))))


class NumberGrammar:
    """Which tokens may come next so that an answer stays a prefix of a one-decimal number.

    Args:
        token_texts: The decoded text of every token id (index = id), e.g. from
            ``tokenizer.batch_decode([[i] for i in range(V)])``.
        special: Texts of special tokens (never allowed as number tokens).
        eos_ids: End-of-sequence ids: allowed once a number is complete, and as the last
            resort when nothing else is (so decoding can never get stuck).
        value_range: ``(low, high)`` of the label: bounds the integer digits.
        decimals: Decimals of the label format (1 for msekit's formats).

    Examples:
        >>> g = NumberGrammar(["-", "2", ".", "3", " -", "x", "23"], set(), [], (-3.0, 3.0))
        >>> [g.texts[i] for i in g.allowed(" -2").tolist()], g.complete(" -2.3"), g.complete("-2.")
        (['.'], True, False)
    """

    def __init__(self, token_texts: list[str], special: set[str], eos_ids: list[int],
                 value_range: tuple[float, float] | None, decimals: int = 1) -> None:
        k = integer_digits(value_range)
        frac = rf"\.\d{{{decimals}}}" if decimals > 0 else ""
        frac_prefix = rf"(?:\.\d{{0,{decimals}}})?" if decimals > 0 else ""
        self._prefix = re.compile(rf" ?(?:[+-]|[+-]?\d{{1,{k}}}{frac_prefix})?")
        self._complete = re.compile(rf" ?[+-]?\d{{1,{k}}}{frac}")
        self.ids = [i for i, s in enumerate(token_texts) if s and set(s) <= NUMBER_CHARS and s not in special]
        self.texts = {i: token_texts[i] for i in self.ids}
        self.eos_ids = list(eos_ids)
        self._allowed: dict[str, torch.Tensor] = {}

    def complete(self, text: str) -> bool:
        """True when ``text`` is a whole number in the label format (nothing may follow)."""
        return self._complete.fullmatch(text) is not None

    def allowed(self, text: str) -> torch.Tensor:
        """Token ids that may follow ``text`` (an answer so far), as a LongTensor."""
        if text not in self._allowed:
            if self.complete(text):
                ids = self.eos_ids
            else:
                ids = [i for i in self.ids if self._prefix.fullmatch(text + self.texts[i])]
            self._allowed[text] = torch.tensor(ids or self.eos_ids or self.ids[:1], dtype=torch.long)
        return self._allowed[text]

    def pick(self, logits: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Greedy choice among the allowed tokens of each row.

        Args:
            logits: (B, V) next-token logits.
            texts: The answer of each row so far (B strings).

        Returns:
            (B,) token ids.
        """
        out = torch.empty(len(texts), dtype=torch.long)
        groups: dict[str, list[int]] = {}
        for r, t in enumerate(texts):
            groups.setdefault(t, []).append(r)
        for t, rows in groups.items():
            ids = self.allowed(t)
            sub = logits[rows][:, ids.to(logits.device)]  # (rows, allowed)
            out[rows] = ids[sub.argmax(dim=-1).cpu()]
        return out


def grammar_for(tokenizer: Any, vocab_size: int, eos_ids: list[int],
                value_range: tuple[float, float] | None) -> NumberGrammar:
    """The :class:`NumberGrammar` of a tokenizer whose LM head has ``vocab_size`` rows."""
    n = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    return NumberGrammar(texts, set(tokenizer.all_special_tokens), eos_ids, value_range)


__all__ = ["NumberGrammar", "grammar_for", "integer_digits", "parse_number"]
