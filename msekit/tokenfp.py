"""Whether a store's token ids are the training LLM's: tokenizer fingerprints.

``msekit extract`` writes each transcript's token ids (``/text/token_ids``) with the tokenizer of
``--llm`` and records that tokenizer's fingerprint in the store's settings
(``settings["tokenizer"]["fingerprint"]``). Training and prediction read the stored ids when the
fingerprint equals their own LLM's, and otherwise tokenize the texts again, with a notice.

A fingerprint is a hash of the ids the tokenizer gives a fixed set of probe strings (without
special tokens, as msekit tokenizes transcripts): two tokenizers with equal fingerprints
tokenize these alike, whichever library (``tokenizers`` or ``transformers``) runs them and
wherever their files lie.

Examples:
    >>> fingerprint(lambda t: [ord(c) for c in t]) == fingerprint(lambda t: [ord(c) for c in t])
    True
    >>> fingerprint(lambda t: [ord(c) for c in t]) == fingerprint(lambda t: [len(t)])
    False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Strings that tell tokenizers apart: spacing, case, digits and signs (labels), punctuation,
# accents, CJK (SIMS, CHERMA), emoji, markers.
PROBES = (
    "Hello, world!", " leading space and trailing ", "UPPER lower MiXeD case",
    "It's -2.3, +0.7 and 3.14159; 1,000,000 (100%).", "naïve café déjà vu Ærø",
    "情感为积极，强度0.8。", "日本語のテキスト", "emoji 🙂👍", "tabs\tand\nnew lines  double  spaces",
    "<Multimodal> </Multimodal> <多模态>", "don't won't y'all", "a" * 40,
)


def fingerprint(encode: Callable[[str], Sequence[int]]) -> str:
    """A short hex hash of the ids ``encode`` gives the probe strings."""
    ids = [list(map(int, encode(t))) for t in PROBES]
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def store_tokenizer(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``{"name", "fingerprint"}`` a store's settings record, or None (older stores, imports)."""
    tok = settings.get("tokenizer")
    return tok if isinstance(tok, dict) and tok.get("fingerprint") else None


def use_stored_token_ids(store: str | Path, settings: dict[str, Any], model_encode: Callable,
                         model_name: str, datasets: Sequence[Any], notice=print) -> bool:
    """Make ``datasets`` (StoreDatasets of ``store``) hand out the stored token ids when the
    store's tokenizer is the model's; otherwise leave them tokenizing, and say why.

    Returns:
        True when the stored ids are used.
    """
    tok = store_tokenizer(settings)
    if tok is None:
        notice(f"{store}: records no tokenizer; the texts are tokenized with {model_name}")
        return False
    if tok["fingerprint"] != fingerprint(model_encode):
        notice(f"{store}: token ids are of {tok.get('name')!r}, not {model_name!r}; the texts are "
               "tokenized again with the LLM's own tokenizer")
        return False
    for ds in datasets:
        if ds is not None:
            ds.read_token_ids()
    return True


def dataset_for_model(store: str | Path, split: str | None, view: Any, model: Any, notice=None):
    """A StoreDataset of ``store`` for ``model`` (a MultimodalLLM), reading the stored token ids
    when the store's tokenizer is the model's (evaluate and predict)."""
    import sys

    from msekit.dataset import StoreDataset
    from msekit.store import StoreReader

    ds = StoreDataset(store, split, view)
    with StoreReader(store) as r:
        settings = r.settings
    say = notice or (lambda m: print(f"note: {m}", file=sys.stderr))
    if store_tokenizer(settings) is None:
        say = lambda m: None  # noqa: E731 - imported stores carry no ids to reuse: nothing to say
    use_stored_token_ids(store, settings, model._ids, getattr(model, "base_llm", "the LLM"), [ds], say)
    return ds
