"""Likelihood scoring of candidate answers over a shared KV cache (used by MultimodalLLM).

For B samples and C candidate answers (class label strings, or values on a grid): one prefill
of the B prompts; the first answer tokens every candidate shares (e.g. the space before a class
digit) run once per sample over that cache; only then is the cache repeated C times, for the
tokens where the candidates differ. The last token of a candidate is never fed (it predicts
nothing), and logits are kept only where a candidate token is predicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from msekit.mllm import MultimodalLLM


def cache_of(out: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version uses."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the prefix all ``seqs`` share, leaving each at least one token of its own."""
    n = min(len(x) for x in seqs) - 1
    for i in range(max(n, 0)):
        if any(x[i] != seqs[0][i] for x in seqs):
            return i
    return max(n, 0)


def score_chunk(model: MultimodalLLM, text_ids: list[list[int]], pseudo: torch.Tensor, cand_ids: list[list[int]]) -> torch.Tensor:
    """(b, C) candidate log-likelihoods: one prefill; the candidates' common first tokens
    over the b rows; the rest over the cache repeated C times."""
    b, C, K = len(text_ids), len(cand_ids), max(len(c) for c in cand_ids)
    embeds, attn, pos, _ = model._assemble(text_ids, pseudo, None)  # (b, T, d)
    out = model.llm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, use_cache=True, **model._keep_last())
    cache = cache_of(out)
    if K > 1 and not hasattr(cache, "batch_repeat_interleave"):
        rows_text = [t for t in text_ids for _ in range(C)]  # row = sample * C + candidate
        rows_label = [c for _ in range(b) for c in cand_ids]
        logp, _ = model._label_logprobs(rows_text, pseudo.repeat_interleave(C, dim=0), rows_label)
        return logp.sum(dim=1).reshape(b, C)  # (b*C,) -> (b, C)
    dist = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (b, V): predicts token 0
    P = common_prefix(cand_ids)  # tokens every candidate starts with (each keeps >= 1 more)
    common = dist.new_zeros(b)
    if P:
        common, dist, attn, pos = _extend_shared(model, cand_ids[0][:P], dist, attn, pos, cache)
    dev = attn.device
    score = common[:, None] + dist[:, torch.tensor([c[P] for c in cand_ids], device=dev)]  # (b, C)
    R = K - 1 - P  # tokens still to feed: candidate tokens P .. K-2 (the last one is never fed)
    if R <= 0:
        return score
    feed = torch.full((C, R + 1), model._pad, dtype=torch.long)
    fmask = torch.zeros(C, R + 1, dtype=torch.long)
    for c, ids in enumerate(cand_ids):  # right padding: the answer continues the prefix
        feed[c, : len(ids) - P] = torch.tensor(ids[P:])
        fmask[c, : len(ids) - P] = 1
    feed, fmask = feed.to(dev), fmask.to(dev)  # (C, R+1): inputs [:, :-1], targets [:, 1:]
    cache.batch_repeat_interleave(C)  # (b, ...) -> (b*C, ...), row = sample * C + candidate
    attn2 = torch.cat([attn.repeat_interleave(C, dim=0), fmask[:, :-1].repeat(b, 1)], dim=1)  # (b*C, T'+R)
    pos2 = pos[:, -1:].repeat_interleave(C, dim=0) + torch.arange(1, R + 1, device=dev)  # (b*C, R)
    out2 = model.llm(
        inputs_embeds=model.llm.get_input_embeddings()(feed[:, :-1].repeat(b, 1)), attention_mask=attn2,
        position_ids=pos2, use_cache=True, **{model._cache_kw: cache},
    )
    logp = torch.log_softmax(out2.logits.float(), dim=-1)  # (b*C, R, V)
    tgt = feed[:, 1:].repeat(b, 1)  # (b*C, R)
    rest = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) * fmask[:, 1:].repeat(b, 1)  # (b*C, R)
    return score + rest.sum(dim=1).reshape(b, C)  # (b, C)

def _extend_shared(model: MultimodalLLM, shared: list[int], dist: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor,
                   cache: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feeds the tokens all candidates share once per sample, extending ``cache``.

    Returns:
        ``(log-likelihood of the shared tokens (b,), next-token log-probs (b, V),
        attention mask (b, T+P), position ids (b, P))``.
    """
    b, P, dev = attn.shape[0], len(shared), attn.device
    ids = torch.tensor(shared, device=dev)
    attn = torch.cat([attn, attn.new_ones(b, P)], dim=1)  # (b, T+P)
    pos = pos[:, -1:] + torch.arange(1, P + 1, device=dev)  # (b, P)
    embeds = model.llm.get_input_embeddings()(ids).unsqueeze(0).expand(b, P, -1)  # (P, d) -> (b, P, d)
    out = model.llm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, use_cache=True,
                   **{model._cache_kw: cache})
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # (b, P, V): position j predicts token j+1
    common = dist[:, ids[0]] + logp[:, :-1].gather(-1, ids[1:].expand(b, -1).unsqueeze(-1)).squeeze(-1).sum(1)
    return common, logp[:, -1], attn, pos


__all__ = ["cache_of", "common_prefix", "score_chunk"]
