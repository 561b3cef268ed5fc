"""Word error rate with one English normalisation applied to both the reference and the hypothesis.

A WER is only comparable across systems when both sides are normalised the same way, so that a
transcript is not charged for writing a word differently (case, punctuation, "Mr." for
"mister", "42" for "forty two", "colour" for "color", "don't" for "do not"). The usual
convention (Whisper's English normaliser, the Hugging Face Open ASR leaderboard) normalises
spelling, not content; this module does the same with its own small rule set:

1. Unicode: accents dropped (NFKD), curly apostrophes -> ``'``; ``&`` -> ``and``,
   ``%`` -> ``percent``; thousands separators (``1,000``) and decimal points
   (``3.5`` -> ``3 point 5``) of digits resolved.
2. Lower case; hyphens split words (``ill-disposed`` -> ``ill disposed``); every other
   punctuation mark goes; apostrophes stay inside a word (``smith's``), not at its edges.
3. Titles: ``mr`` -> ``mister``, ``mrs`` -> ``missus``, ``dr`` -> ``doctor``.
4. Contractions whose expansion is unambiguous: ``n't`` -> ``not`` (``won't`` -> ``will not``,
   ``can't`` and ``cannot`` -> ``can not``), ``'re`` -> ``are``, ``'ve`` -> ``have``,
   ``'ll`` -> ``will``, ``'m`` -> ``am``. ``'s`` and ``'d`` (is / has / possessive,
   had / would) stay as written.
5. Numbers in digits -> words, cardinal (``1811`` -> ``one thousand eight hundred eleven``)
   or ordinal (``21st`` -> ``twenty first``); an ``and`` inside a spelled number goes
   (``one hundred and five`` = ``105``).
6. British -> American spelling for a short table of common stems (``colour``, ``centre``,
   ``realise``, ``travelled``, ``grey``, ...), prefixes included (``colourful``).
7. Hesitations dropped: ``uh``, ``um``, ``er``, ``erm``, ``hmm``, ``mm``, ``mhm``.

Not normalised (counted as errors): compounds written as one word (``coldhearted`` vs
``cold hearted``), years read in pairs (``eighteen eleven`` vs ``1811``), disfluencies that are
words (a repeated ``a``), and ``'s`` / ``'d`` expansions.

Examples:
    >>> wer_words("Mr. Smith's ill-disposed colour, don't 21st!")
    ['mister', "smith's", 'ill', 'disposed', 'color', 'do', 'not', 'twenty', 'first']
    >>> wer_words("One hundred and five, um, 3.5% ‘quoted’")
    ['one', 'hundred', 'five', 'three', 'point', 'five', 'percent', 'quoted']
    >>> word_error_rate(["he was not an ill disposed young man"], ["He was not an old-spose man."])
    0.375
"""

from __future__ import annotations

import re
import unicodedata

_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
_FILLERS = frozenset({"uh", "um", "er", "erm", "hmm", "mm", "mmm", "mhm"})
_NOT = {"won't": "will not", "can't": "can not", "cannot": "can not", "shan't": "shall not",
        "ain't": "is not"}
_SUFFIXES = (("n't", "not"), ("'re", "are"), ("'ve", "have"), ("'ll", "will"), ("'m", "am"))
# British stem -> American stem; a word starting with the stem gets the American one.
_SPELLING = {
    "colour": "color", "honour": "honor", "favour": "favor", "labour": "labor",
    "neighbour": "neighbor", "behaviour": "behavior", "humour": "humor", "flavour": "flavor",
    "harbour": "harbor", "rumour": "rumor", "vigour": "vigor", "endeavour": "endeavor",
    "armour": "armor", "parlour": "parlor", "savour": "savor", "centre": "center",
    "theatre": "theater", "metre": "meter", "litre": "liter", "fibre": "fiber",
    "realis": "realiz", "recognis": "recogniz", "organis": "organiz", "apologis": "apologiz",
    "criticis": "criticiz", "emphasis": "emphasiz", "travell": "travel", "cancell": "cancel",
    "grey": "gray", "defence": "defense", "offence": "offense", "catalogue": "catalog",
    "dialogue": "dialog", "programme": "program", "jewellery": "jewelry", "plough": "plow",
    "sceptic": "skeptic", "mould": "mold", "aluminium": "aluminum", "tyre": "tire",
}
_SPELLING_RE = re.compile(r"^(" + "|".join(sorted(_SPELLING, key=len, reverse=True)) + r")")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_NUMBER_WORDS = frozenset(_ONES + _TENS[2:] + [s for _, s in _SCALES])


def number_words(n: int) -> list[str]:
    """A non-negative integer spelled as words, without "and" (``105`` -> one hundred five)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for value, name in _SCALES:
        if n >= value:
            rest = number_words(n % value) if n % value else []
            return number_words(n // value) + [name] + rest
    raise AssertionError(n)  # unreachable: n >= 100 matches "hundred"


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def _prepare(text: str) -> str:
    """Step 1: characters and digit groups, before punctuation goes."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[\u2018\u2019\u02bc]", "'", text).replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)  # 3.5 -> 3 point 5
    return text.replace("%", " percent ")


def _token(word: str) -> list[str]:
    """Steps 3-6 for one lower-case token without edge apostrophes."""
    if word in _TITLES:
        return [_TITLES[word]]
    if word in _NOT:
        return _NOT[word].split()
    for suffix, full in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return [word[: -len(suffix)], full]
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)?", word)
    if m:
        spelled = number_words(int(m.group(1)))
        return _ordinal(spelled) if m.group(2) else spelled
    return [_SPELLING_RE.sub(lambda s: _SPELLING[s.group(1)], word)]


def wer_words(text: str) -> list[str]:
    """The normalised words of ``text`` (see the module docstring for the rules)."""
    raw = re.findall(r"[\w']+", _prepare(text).lower().replace("-", " ").replace("_", " "))
    out: list[str] = []
    for tok in raw:
        tok = tok.strip("'")
        if tok and tok not in _FILLERS:
            out += _token(tok)
    # "one hundred and five": drop an "and" between two number words.
    return [w for i, w in enumerate(out) if not (
        w == "and" and 0 < i < len(out) - 1 and out[i - 1] in _NUMBER_WORDS
        and out[i + 1] in _NUMBER_WORDS)]


def edit_ops(ref: list[str], hyp: list[str]) -> list[tuple[str, str, str]]:
    """A minimum-edit alignment: (op, ref word, hyp word), op in = sub del ins."""
    n, m = len(ref), len(hyp)
    d = [[i + j if i * j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]  # (n+1, m+1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    ops, i, j = [], n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "sub", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append(("del", ref[i - 1], ""))
            i -= 1
        else:
            ops.append(("ins", "", hyp[j - 1]))
            j -= 1
    return ops[::-1]


def word_errors(ref: str, hyp: str) -> list[tuple[str, str, str]]:
    """The edits (no matches) between two normalised texts, in reading order."""
    return [op for op in edit_ops(wer_words(ref), wer_words(hyp)) if op[0] != "="]


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: word edits (substitutions + deletions + insertions) / reference words.

    Both sides are normalised by ``wer_words``.
    """
    edits = total = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        edits += len(word_errors(ref, hyp))
        total += len(wer_words(ref))
    return edits / max(total, 1)
