"""Likelihood scoring of candidate answers: the prompt and every candidate in one forward.

For b samples and C candidate answers (class label strings, or values on a grid), each row of
one LLM forward holds the sample's prompt followed by all candidates' tokens side by side:

    [prompt (T, left-padded)] [tokens every candidate starts with (P)] [cand 0] [cand 1] ...

A 4D attention mask lets a candidate token see the row's prompt, the shared tokens and its own
candidate's earlier tokens only, and its position ids continue the prompt's as if it were the
only answer, so each candidate scores exactly as if it had been appended alone (the
straightforward computation, up to float rounding). The last token of a candidate is never fed
(it predicts nothing), and logits are kept only at the positions that predict a candidate
token. The cost is one prefill plus a few positions: for 7 classes of 3 tokens, 8 extra.

When the candidates' tokens exceed a budget (many candidates, e.g. a value grid), the first
group rides with the prompt and the next groups run over the prompt's KV cache, which is cut
back to the prompt after each group. Models whose attention takes no 4D mask
(``flash_attention_2`` and other kernels) score one whole row per (sample, candidate), which
gives the same numbers more slowly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from msekit.mllm import MultimodalLLM

MASK_IMPLEMENTATIONS = ("sdpa", "eager")  # attention implementations that take a 4D mask
KEPT_POSITIONS = 4096  # rows x kept positions per forward: bounds the (b, 1+L, V) logits


def cache_of(out: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version uses."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the prefix all ``seqs`` share, leaving each at least one token of its own.

    Examples:
        >>> common_prefix([[5, 7, 1], [5, 8, 1]]), common_prefix([[5, 7], [5]]), common_prefix([[3]])
        (1, 0, 0)
    """
    n = min(len(x) for x in seqs) - 1
    for i in range(max(n, 0)):
        if any(x[i] != seqs[0][i] for x in seqs):
            return i
    return max(n, 0)


@dataclass
class Layout:
    """The tokens of one group of candidates, side by side behind the prompt.

    Attributes:
        ids: (L,) fed token ids: the P shared tokens, then each candidate's tokens P .. n-2.
        seg: (L,) -1 for a shared token, else the candidate (index into the group) it belongs to.
        offset: (L,) position after the prompt's last position (1 = the next one).
        where: (N,) kept position predicting each scored token: 0 = the prompt's last position,
            1 + i = fed token i.
        target: (N,) the scored token ids; cand: (N,) their candidate (index into all C).
    """

    ids: torch.Tensor
    seg: torch.Tensor
    offset: torch.Tensor
    where: torch.Tensor
    target: torch.Tensor
    cand: torch.Tensor


def layout(cand_ids: list[list[int]], members: list[int], P: int) -> Layout:
    """The :class:`Layout` of candidates ``members`` (indices into ``cand_ids``)."""
    shared = cand_ids[members[0]][:P]
    ids, seg, offset = list(shared), [-1] * P, list(range(1, P + 1))
    where, target, cand = [], [], []
    for g, c in enumerate(members):
        toks, start = cand_ids[c], len(ids)  # start: index of this candidate's first fed token
        for k, t in enumerate(toks):  # token k is predicted by the position before it
            where.append(0 if k == 0 else k if k <= P else 1 + start + (k - 1 - P))
            target.append(t)
            cand.append(c)
        fed = toks[P:-1]
        ids += fed
        seg += [g] * len(fed)
        offset += list(range(P + 1, P + 1 + len(fed)))
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Layout(t(ids), t(seg), t(offset), t(where), t(target), t(cand))


def groups(cand_ids: list[list[int]], P: int, budget: int) -> list[list[int]]:
    """Candidates in order, split so each group feeds at most ``budget`` tokens (>= 1 each)."""
    out: list[list[int]] = [[]]
    used = P
    for c, toks in enumerate(cand_ids):
        n = len(toks) - 1 - P
        if out[-1] and used + n > budget:
            out.append([])
            used = P
        out[-1].append(c)
        used += n
    return out


def group_mask(attn: torch.Tensor, seg: torch.Tensor, with_prompt: bool,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """4D attention mask over keys [prompt T | group L].

    Args:
        attn: (b, T) 1 on the prompt's real tokens, 0 on its left padding.
        seg: (L,) the layout's segments (-1 shared).
        with_prompt: queries are the prompt and the group (one forward with the prompt), else
            the group only (over the prompt's KV cache).
        dtype: None: a bool mask (True = attend; SDPA's fast CPU path), else an additive mask
            of this float type (0 = attend; what eager attention adds to its scores).

    Returns:
        (b, 1, Q, T + L), Q = T + L or L.
    """
    b, T = attn.shape
    L, dev = seg.shape[0], attn.device
    seg = seg.to(dev)
    idx = torch.arange(L, device=dev)
    own = (idx[None, :] <= idx[:, None]) & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))  # (L, L)
    real = attn.bool()  # (b, T)
    group_rows = torch.cat([real[:, None, :].expand(b, L, T), own.expand(b, L, L)], dim=2)  # (b, L, T+L)
    allowed = group_rows
    if with_prompt:
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()  # (T, T)
        prompt = causal & real[:, None, :]  # (b, T, T): real keys at or before the query
        prompt = prompt | torch.eye(T, dtype=torch.bool, device=dev)  # a padding query sees itself (no NaN)
        prompt_rows = torch.cat([prompt, real.new_zeros(b, T, L)], dim=2)  # (b, T, T+L)
        allowed = torch.cat([prompt_rows, group_rows], dim=1)  # (b, T+L, T+L)
    if dtype is None:
        return allowed[:, None]  # (b, 1, Q, T+L)
    zero = torch.zeros((), dtype=dtype, device=dev)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # (b, 1, Q, T+L)


def takes_4d_mask(llm: Any) -> bool:
    """Whether the model's attention takes a custom 4D mask (sdpa / eager)."""
    return getattr(llm.config, "_attn_implementation", None) in MASK_IMPLEMENTATIONS


def score_chunk(model: MultimodalLLM, text_ids: list[list[int]], pseudo: torch.Tensor,
                cand_ids: list[list[int]], grad: bool = False) -> torch.Tensor:
    """(b, C) candidate log-likelihoods (summed over each candidate's tokens).

    ``grad=True`` (a training loss) never runs over a cut-back KV cache: candidates that need
    more than one group are scored one row per (sample, candidate) instead.
    """
    b, C = len(text_ids), len(cand_ids)
    P = common_prefix(cand_ids)
    parts = groups(cand_ids, P, max(1, KEPT_POSITIONS // b - 1))
    if not takes_4d_mask(model.llm) or (grad and len(parts) > 1):
        rows_text = [t for t in text_ids for _ in range(C)]  # row = sample * C + candidate
        rows_label = [c for _ in range(b) for c in cand_ids]
        logp, _ = model._label_logprobs(rows_text, pseudo.repeat_interleave(C, dim=0), rows_label)
        return logp.sum(dim=1).reshape(b, C)  # (b*C,) -> (b, C)
    embeds, attn, pos, _ = model._assemble(text_ids, pseudo, None)  # (b, T, d)
    score = torch.zeros(b, C, dtype=torch.float32, device=attn.device)
    head, cache = None, None
    for g, members in enumerate(parts):
        lay = layout(cand_ids, members, P)
        logits, cache = _group_forward(model, embeds, attn, pos, lay, cache if g else None,
                                       use_cache=len(parts) > 1)  # (b, 1+L, V)
        logits = logits.float()
        if g == 0:
            head = logits[:, :1]  # (b, 1, V): the prompt's last position, shared by all groups
        else:
            logits = torch.cat([head, logits[:, 1:]], dim=1)
        where, target = lay.where.to(attn.device), lay.target.to(attn.device)
        picked = logits[:, where, target] - torch.logsumexp(logits, dim=-1)[:, where]  # (b, N)
        score.index_add_(1, lay.cand.to(attn.device), picked)
    return score


def _group_forward(model: MultimodalLLM, embeds: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor,
                   lay: Layout, cache: Any, use_cache: bool) -> tuple[torch.Tensor, Any]:
    """One forward of a group: with the prompt (``cache`` None) or over the prompt's cache.

    Returns:
        ``(logits (b, 1+L, V), the cache cut back to the prompt, or None when there is none
        to cut)``; position 0 of the logits is the prompt's last position (a placeholder when
        run over the cache).
    """
    b, L, dev = attn.shape[0], lay.ids.shape[0], attn.device
    x = model.llm.get_input_embeddings()(lay.ids.to(dev)).to(embeds.dtype)  # (L, d)
    x = x.unsqueeze(0).expand(b, L, -1)  # (b, L, d)
    gpos = pos[:, -1:] + lay.offset.to(dev)  # (b, L)
    keep = L + 1 if cache is None else L
    kw: dict[str, Any] = {"logits_to_keep": keep} if model._has_logits_to_keep else {}
    if cache is None:
        inputs, positions = torch.cat([embeds, x], dim=1), torch.cat([pos, gpos], dim=1)  # (b, T+L, .)
    else:
        inputs, positions = x, gpos
        kw[model._cache_kw] = cache
    sdpa = model.llm.config._attn_implementation == "sdpa"
    mask = group_mask(attn, lay.seg, cache is None, None if sdpa else embeds.dtype)
    out = model.llm(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                    use_cache=use_cache, **kw)
    logits = out.logits[:, -keep:]  # (b, keep, V)
    if cache is not None:
        logits = torch.cat([logits[:, :1], logits], dim=1)  # (b, 1+L, V)
    cache = cache_of(out) if use_cache else None
    if cache is None or not hasattr(cache, "crop"):
        return logits, None  # the next group runs with the prompt again (same numbers)
    cache.crop(-L)  # back to the prompt (a negative length removes tokens, in every version)
    return logits, cache


__all__ = ["cache_of", "common_prefix", "group_mask", "groups", "layout", "score_chunk", "takes_4d_mask"]
