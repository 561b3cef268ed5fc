"""Scaled initialisation of the MSE-Adapter (``AdapterConfig.init = "scaled"``, msekit's default).

With PyTorch's default initialisation (``init = "paper"``, what the authors' code does) the
adapter starts with pseudo tokens that are almost the same for every input: the bias of the
``Linear(1 -> n)`` adds a value drawn from U(-1, 1) to all d dimensions of a token, and the
Text-Guide-Mixer multiplies two small vectors (the pooled text embeddings are ~0.04 per dim
after their projection). Measured on SmolLM2-135M with standardized features: the pseudo tokens'
RMS is 0.47 per dimension, 3.5x the RMS of the LLM's own input embeddings (0.136), while the
part that depends on the input varies by 7.7e-5 per dimension across samples. Training must
first grow that part ~2,000 times; with some seeds it never does and the run stays at the
majority class while its loss falls (it learns the label prior).

``scaled_init`` fixes the scales on a batch of training samples (up to ``INIT_SAMPLES``, evenly
spread over the training pool) and changes nothing else (same modules, same parameter count,
the paper's forward pass); the modes are ``AdapterConfig``'s ``INIT_MODES``:

1. the text projection and each modality's output projection are rescaled so that ``t``,
   ``a`` and ``v`` have unit standard deviation on that batch (so ``a * t`` is of order 1);
2. the pseudo-token layer starts as copies of the fused vector (``Linear(1 -> n)`` weight 1,
   bias 0) and the output projection's bias is 0;
3. the output projection is rescaled so that the pseudo tokens vary across the batch's samples
   by the LLM's embedding RMS per dimension, and its bias centres them on the batch: the input
   is visible to the LLM from the first step, at the scale of the tokens it was trained on.

It is deterministic (the same samples whatever the batch size, eval mode, no random numbers
drawn), so every rank of a distributed run agrees with a single process; a resumed run loads
its checkpoint instead.
"""

from __future__ import annotations

from typing import Any

import torch

INIT_SAMPLES = 32  # samples of the training pool the scales are measured on


def embedding_rms(llm, chunk_rows: int = 8192) -> float:
    """RMS of the LLM's input embedding table (per entry), read in float32 chunks."""
    weight = llm.get_input_embeddings().weight.detach()
    total, count = 0.0, 0
    for start in range(0, weight.shape[0], chunk_rows):
        rows = weight[start : start + chunk_rows].float()
        total += float(rows.pow(2).sum())
        count += rows.numel()
    return (total / max(count, 1)) ** 0.5


def _unit_gain(x: torch.Tensor) -> float:
    """1 / std(x) over every entry (1.0 for a constant or empty tensor)."""
    std = float(x.float().std()) if x.numel() > 1 else 0.0
    return 1.0 / std if std > 1e-12 else 1.0


def _scale_(linear: torch.nn.Linear, gain: float) -> None:
    linear.weight.mul_(gain)
    if linear.bias is not None:
        linear.bias.mul_(gain)


def _spread(tokens: torch.Tensor) -> float:
    """Mean over (token, dim) of the standard deviation across samples; RMS for one sample."""
    if tokens.shape[0] > 1:
        return float(tokens.float().std(dim=0).mean())
    return float(tokens.float().pow(2).mean().sqrt())


@torch.no_grad()
def scaled_init(adapter, inputs: dict[str, Any], embed_rms: float) -> dict[str, float]:
    """Rescales a freshly built :class:`~msekit.adapter.MSEAdapter` in place (see the module doc).

    Args:
        adapter: the adapter, as built (its weights are changed in place).
        inputs: keyword arguments of ``adapter.forward`` for one training batch
            (``text_embeds`` (B, L, d), ``text_mask``, ``audio``, ``audio_lengths``, ...).
        embed_rms: RMS of the LLM's input embeddings (:func:`embedding_rms`).

    Returns:
        The gains applied, by layer name, and the pseudo tokens' spread after (for the log).
    """
    was_training = adapter.training
    adapter.eval()
    dtype = adapter.text_proj.weight.dtype
    te = inputs["text_embeds"].to(dtype)
    gains: dict[str, float] = {}
    t = adapter.text_proj(adapter.pool_text(te, inputs.get("text_mask")))  # (B, F)
    gains["text_proj"] = _unit_gain(t)
    _scale_(adapter.text_proj, gains["text_proj"])
    for name in ("audio", "video"):
        encoder, x = getattr(adapter, f"{name}_encoder"), inputs.get(name)
        if encoder is None or x is None or x.numel() == 0:
            continue
        lengths = inputs.get(f"{name}_lengths")
        if lengths is not None and int(lengths.max()) == 0:
            continue
        gains[f"{name}_proj"] = _unit_gain(encoder(x, lengths, name))  # (B, F)
        _scale_(encoder.proj, gains[f"{name}_proj"])
    if adapter.config.pseudo_token_mode == "linear1":
        adapter.pseudo.weight.fill_(1.0)
        adapter.pseudo.bias.zero_()
    adapter.out_proj.bias.zero_()
    spread = _spread(adapter(**inputs))  # (B, n, d) -> scalar
    gains["out_proj"] = embed_rms / spread if spread > 1e-12 else 1.0
    adapter.out_proj.weight.mul_(gains["out_proj"])
    if te.shape[0] > 1:  # centre the tokens on the batch: what is left is what the input says
        adapter.out_proj.bias.sub_(adapter(**inputs).mean(dim=(0, 1)).to(dtype))  # (B, n, d) -> (d,)
    gains["token_spread"] = _spread(adapter(**inputs))
    adapter.train(was_training)
    return gains


def capture_inputs(model, batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``model.encode(batch)`` passes to its adapter (run once, no grad)."""
    captured: dict[str, Any] = {}
    names = ("text_embeds", "text_mask", "audio", "audio_lengths", "video", "video_lengths")

    def hook(_module, args, kwargs):
        captured.update(dict(zip(names, args, strict=False)) | kwargs)

    handle = model.adapter.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model.encode(batch)
    finally:
        handle.remove()
    return captured
