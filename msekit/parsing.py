"""Reading a generated answer back into a label: ``parse_number`` and ``parse_class``.

Neither ever guesses: an answer that holds no number, or no label string, gives None / -1 and
the caller counts it as unparsed.

Examples:
    >>> parse_number(" -2.3 and more"), parse_number("+0.5"), parse_number("none")
    (-2.3, 0.5, None)
    >>> parse_class("joy.", ["anger", "joy"]), parse_class("3", ["0", "1", "2", "3"]), parse_class("?", ["a"])
    (1, 3, -1)
"""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def parse_number(text: str | None) -> float | None:
    """The first number in a generated answer, or None when there is none.

    Never falls back to 0.0: callers must count and report unparsable answers.
    """
    if text is None:
        return None
    text = text.replace("\u2212", "-").replace("\uff0d", "-")  # unicode minus signs
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(0))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_class(text: str | None, label_strings: list[str]) -> int:
    """Class index of a generated answer: the label string it starts with (longest match), -1
    if none; e.g. ``"3"`` -> 3 for index labels, ``"joy."`` -> the index of ``joy``."""
    t = (text or "").strip().lower()
    best, best_len = -1, 0
    for k, s in enumerate(label_strings):
        s = s.strip().lower()
        if s and t.startswith(s) and len(s) > best_len:
            best, best_len = k, len(s)
    return best
