"""Prompt assembly for ``MultimodalLLM``: the prompt's token pieces and its left-padded rows.

Each sample becomes one sequence of input embeddings (left-padded to the batch's longest):

    [prefix special tokens, e.g. BOS] [start marker] [n pseudo tokens] [transcript]
    [end marker] [task prompt] [label tokens (+ EOS)]

The prefix is exactly what the tokenizer itself puts in front of a text (BOS for Llama, none
for GPT-2 or Qwen2); every other piece is tokenized without special tokens, so there is never
a double BOS. Attention masks and position ids are always passed, so padding is neither
attended to nor counted in positions; the targets cover the label tokens only (-100 elsewhere,
including padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer itself puts before a text (e.g. [BOS]), or []."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def eos_ids(tokenizer: Any, llm: Any) -> list[int]:
    """Every token id that ends an answer: the tokenizer's EOS and the LLM's generation config's."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(llm, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return sorted(ids)


def left_pad(rows: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch (the padding before each row, as the paper's tokenizer).

    Returns:
        ``ids`` (R, length) long and ``mask`` (R, length) bool, True on the rows' tokens.

    Examples:
        >>> ids, mask = left_pad([[5, 6], [7], []], 3, pad=0)
        >>> ids.tolist()
        [[0, 5, 6], [0, 0, 7], [0, 0, 0]]
        >>> mask.sum(dim=1).tolist()
        [2, 1, 0]
    """
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for r, row in enumerate(rows):
        if row:
            ids[r, length - len(row) :] = torch.tensor(row)
            mask[r, length - len(row) :] = True
    return ids, mask


@dataclass
class Layout:
    """The token side of a batch of prompts, all (R, T) and on the CPU."""

    ids: torch.Tensor  # long; the pseudo-token slots hold the pad id until the embeddings replace them
    attention_mask: torch.Tensor  # long, 1 on every row's tokens
    position_ids: torch.Tensor  # long, counting the row's tokens only (padding at 0, masked)
    is_pseudo: torch.Tensor  # bool, the n pseudo-token slots of every row
    targets: torch.Tensor  # long, the label token ids at label positions, -100 elsewhere


def layout(head: list[int], bodies: list[list[int]], n: int, label_ids: list[list[int]] | None,
           pad: int) -> Layout:
    """The rows ``head + [n pseudo slots] + body + label`` left-padded to the longest.

    Args:
        head: the prefix special tokens and the start marker.
        bodies: per row, the transcript, the end marker and the task prompt.
        n: pseudo tokens per row.
        label_ids: per row, the label tokens (None: no labels, for decoding).
        pad: the pad token id.

    Examples:
        >>> lay = layout([1], [[7, 8], [9]], 2, [[4], [4]], pad=0)
        >>> lay.ids.tolist()
        [[1, 0, 0, 7, 8, 4], [0, 1, 0, 0, 9, 4]]
        >>> lay.position_ids[1].tolist(), lay.targets[1].tolist()
        ([0, 0, 1, 2, 3, 4], [-100, -100, -100, -100, -100, 4])
    """
    labels = label_ids if label_ids is not None else [[] for _ in bodies]
    rows = [head + [pad] * n + body + lab for body, lab in zip(bodies, labels, strict=True)]
    T = max(len(x) for x in rows)
    ids, mask = left_pad(rows, T, pad)
    attn = mask.long()
    is_pseudo = torch.zeros(len(rows), T, dtype=torch.bool)
    targets = torch.full((len(rows), T), -100, dtype=torch.long)
    for r, (row, lab) in enumerate(zip(rows, labels, strict=True)):
        start = T - len(row) + len(head)
        is_pseudo[r, start : start + n] = True
        if lab:
            targets[r, T - len(lab) :] = torch.tensor(lab)
    position_ids = (attn.cumsum(dim=1) - 1).clamp(min=0)  # (R, T); padding sits at 0, masked
    return Layout(ids, attn, position_ids, is_pseudo, targets)
