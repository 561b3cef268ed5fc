"""The MSE-Adapter module: audio, video and pooled text in, n pseudo tokens of width d out.

Pipeline (B = batch, L = text tokens, T = frames, d = LLM width, F = fusion width 256):
text embeddings -> pooled -> Linear(d -> F); audio/video -> LSTM over the real length ->
Linear(hidden -> F); Text-Guide-Mixer f = a*t + v*t; Multi-Scale-Fusion: three MLPs
F -> d/k -> F merged by a Conv2d(1, 1, (1, 3)); Linear(F -> d); Linear(1 -> n) pseudo tokens.

With ``AdapterConfig.linear_path`` (``--linear-path``; on in the demo preset) a linear path
runs beside it: the utterance means of audio and video -> Linear(Da + Dv -> K) (K classes, or 1
value) -> softmax for classes -> Linear(K -> d), added to every pseudo token. ``msekit train``
starts it from a linear probe fitted on the train split (:mod:`msekit.adapter.probe`), fits its
read-out into the frozen LLM, validates that start and keeps it unless training beats it (linear
probing, then fine-tuning: LP-FT).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from msekit.adapter.config import AdapterConfig
from msekit.errors import MsekitError


class SequenceEncoder(nn.Module):
    """A 1-layer unidirectional LSTM over the real part of each sequence, then Linear(H -> F).

    ``pooling="last"`` hands on the final hidden state (the paper); ``"mean"`` the mean of the
    LSTM's outputs over the real frames, so every frame reaches the loss directly (long
    frame-level sequences, e.g. 100 Hz acoustic descriptors, train in far fewer steps).
    A sample of length 0 gets an all-zero output vector (no bias leaks through), so its
    Hadamard product with the text vector vanishes.
    """

    def __init__(self, input_dim: int, hidden: int, out_dim: int, pooling: str = "last") -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=1, batch_first=True)
        self.proj = nn.Linear(hidden, out_dim)
        self.pooling = pooling

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Encodes a padded batch.

        Args:
            x: Features, (B, T, D).
            lengths: Real lengths, (B,); 0 means the modality is missing for that sample.
            name: Modality name, used in error messages.

        Returns:
            (B, F) vectors; zeros for samples of length 0.
        """
        B, T, D = x.shape
        if D != self.lstm.input_size:
            raise MsekitError(f"{name}: feature dim must be {self.lstm.input_size}, received {D}")
        lengths = torch.as_tensor(lengths, device="cpu").long().reshape(-1)
        if lengths.numel() != B:
            raise MsekitError(f"{name}_lengths: need {B} lengths (one per sample), received {lengths.numel()}")
        if bool((lengths < 0).any()) or bool((lengths > T).any()):
            raise MsekitError(f"{name}_lengths must lie in [0, {T}] (padded length), received {lengths.tolist()}")
        present = lengths > 0  # (B,)
        dtype = next(self.lstm.parameters()).dtype
        h = x.new_zeros(B, self.lstm.hidden_size, dtype=dtype)  # (B, H)
        if bool(present.any()):
            idx = present.nonzero().squeeze(1).to(x.device)  # (B',)
            # Outside autocast, in the weights' dtype (fp32): under bf16 autocast PyTorch has no
            # fused cuDNN LSTM and steps through the frames one kernel at a time, and on the CPU
            # autocast would run it in bf16. The state is cast back by the Linear that follows.
            with torch.autocast(x.device.type, enabled=False):
                packed = pack_padded_sequence(x[idx].to(dtype), lengths[idx.cpu()], batch_first=True,
                                              enforce_sorted=False)
                out, (h_n, _) = self.lstm(packed)  # h_n: (1, B', H), in the original order
                state = h_n[-1] if self.pooling == "last" else self._mean(out)  # (B', H)
            h = h.index_copy(0, idx, state.to(h.dtype))  # (B, H); cuDNN may answer in fp16
        out = self.proj(h)  # (B, F)
        return out * present.to(out.device, out.dtype).unsqueeze(1)  # (B, F), zero where absent

    @staticmethod
    def _mean(packed_out) -> torch.Tensor:
        """Mean over the real frames of a packed LSTM output, (B', H), in the input's order."""
        out, lens = pad_packed_sequence(packed_out, batch_first=True)  # (B', T', H), (B',)
        return out.sum(dim=1) / lens.to(out.device, out.dtype).unsqueeze(1)  # padding is zero


class MSEAdapter(nn.Module):
    """The MSE-Adapter of the paper (Text-Guide-Mixer + Multi-Scale-Fusion + pseudo tokens).

    Args:
        config: The :class:`AdapterConfig`.

    Examples:
        >>> cfg = AdapterConfig(llm_hidden_size=4096, audio_dim=74, video_dim=35)
        >>> MSEAdapter(cfg).num_parameters()
        2631692
    """

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        d, F = config.llm_hidden_size, config.fusion_dim
        self.text_proj = nn.Linear(d, F)
        self.audio_encoder = (
            SequenceEncoder(config.audio_dim, config.audio_hidden, F, config.seq_pooling) if config.has_audio else None
        )
        self.video_encoder = (
            SequenceEncoder(config.video_dim, config.video_hidden, F, config.seq_pooling) if config.has_video else None
        )
        self.msf_branches = nn.ModuleList(
            nn.Sequential(nn.Linear(F, h), nn.GELU(), nn.Linear(h, F)) for h in config.msf_hidden_sizes
        )
        self.msf_merge = nn.Conv2d(1, 1, kernel_size=(1, 3))
        self.dropout = nn.Dropout(config.dropout)
        n = config.num_pseudo_tokens
        if config.has_path:
            self.path = nn.Linear(config.audio_dim + config.video_dim, config.path_outputs)  # (Da+Dv) -> K
            self.path_proj = nn.Linear(config.path_outputs, d)  # K -> d
        if config.pseudo_token_mode == "linear1":
            self.out_proj = nn.Linear(F, d)
            self.pseudo = nn.Linear(1, n)
        else:  # "full": n distinct F-vectors, then the shared projection to d
            self.token_expand = nn.Linear(F, n * F)
            self.out_proj = nn.Linear(F, d)

    # ------------------------------------------------------------------ helpers
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)`` parameter counts, as PEFT names it."""
        return self.num_parameters(trainable_only=True), self.num_parameters()

    def pool_text(self, text_embeds: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of the text embeddings: over real tokens (``mean_real``) or all (``mean_all``).

        Args:
            text_embeds: (B, L, d).
            text_mask: (B, L) bool, True on real tokens; None means all are real.

        Returns:
            (B, d). A sample without real tokens pools to zeros under ``mean_real``.
        """
        if self.config.text_pooling == "mean_all" or text_mask is None:
            return text_embeds.mean(dim=1)  # (B, d)
        m = text_mask.to(text_embeds.dtype).unsqueeze(-1)  # (B, L, 1)
        return (text_embeds * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, d)

    def _modality(
        self, encoder: SequenceEncoder | None, x, lengths, name: str, B: int, like: torch.Tensor
    ) -> torch.Tensor:
        F = self.config.fusion_dim
        if encoder is None:
            if x is not None and x.numel() > 0:
                raise MsekitError(f"{name}: this adapter has no {name} branch ({name}_dim=0), received {name} features")
            return like.new_zeros(B, F)  # (B, F)
        if x is None:  # the whole batch lacks the modality
            return like.new_zeros(B, F)  # (B, F)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        if x.shape[0] != B:
            raise MsekitError(f"{name}: batch size must be {B} (as the text), received {x.shape[0]}")
        if x.shape[1] == 0:
            return like.new_zeros(B, F)  # (B, F)
        return encoder(x, lengths, name)  # the encoder casts to its LSTM's dtype

    def utterance_means(self, audio, audio_lengths, video, video_lengths, B: int, like: torch.Tensor) -> torch.Tensor:
        """(B, Da + Dv): each modality's mean over its real frames, zeros where it is missing."""
        parts = []
        for dim, x, lengths in ((self.config.audio_dim, audio, audio_lengths),
                                (self.config.video_dim, video, video_lengths)):
            if not dim:
                continue
            if x is None or x.shape[1] == 0:
                parts.append(like.new_zeros(B, dim))  # (B, D)
                continue
            x = x.to(like.device, like.dtype)  # (B, T, D)
            T = x.shape[1]
            n = (torch.full((B,), T, dtype=torch.long) if lengths is None
                 else torch.as_tensor(lengths, device="cpu").long().reshape(-1)).to(x.device)  # (B,)
            mask = (torch.arange(T, device=x.device).unsqueeze(0) < n.unsqueeze(1)).to(like.dtype)  # (B, T)
            total = (x * mask.unsqueeze(-1)).sum(dim=1)  # (B, D)
            parts.append(total / n.clamp(min=1).to(like.dtype).unsqueeze(1))  # (B, D)
        return torch.cat(parts, dim=1)  # (B, Da + Dv)

    def path_evidence(self, means: torch.Tensor) -> torch.Tensor:
        """The linear path's output before its projection: class probabilities (B, K), or the value (B, 1)."""
        z = self.path(means)  # (B, K)
        return z.softmax(dim=-1) if self.config.path_outputs > 1 else z

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        text_embeds: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        video: torch.Tensor | None = None,
        video_lengths: torch.Tensor | None = None,
        evidence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Computes the pseudo tokens.

        Args:
            text_embeds: LLM input embeddings of the transcript, (B, L, d).
            text_mask: (B, L) bool, True on real tokens.
            audio: (B, Ta, Da) padded audio features, or None when absent.
            audio_lengths: (B,) real lengths; 0 = no audio for that sample.
            video: (B, Tv, Dv) padded video features, or None when absent.
            video_lengths: (B,) real lengths; 0 = no video for that sample.
            evidence: (B, K) stands in for the linear path's own evidence (its class
                probabilities); used to fit the path's read-out (:func:`msekit.adapter.probe.fit_readout`).

        Returns:
            Pseudo tokens, (B, n, d), in the adapter's dtype.

        Raises:
            MsekitError: On a width, batch or length mismatch.
        """
        cfg = self.config
        if text_embeds.dim() != 3 or text_embeds.shape[-1] != cfg.llm_hidden_size:
            raise MsekitError(
                f"text_embeds must be (B, L, {cfg.llm_hidden_size}), received {tuple(text_embeds.shape)}"
            )
        weight = self.text_proj.weight
        text_embeds = text_embeds.to(weight.dtype)
        B = text_embeds.shape[0]
        t = self.text_proj(self.pool_text(text_embeds, text_mask))  # (B, F)
        a = self._modality(self.audio_encoder, audio, audio_lengths, "audio", B, t)  # (B, F)
        v = self._modality(self.video_encoder, video, video_lengths, "video", B, t)  # (B, F)
        f = a * t + v * t  # (B, F) Text-Guide-Mixer
        scales = torch.stack([branch(f) for branch in self.msf_branches], dim=-1)  # (B, F, 3)
        fused = self.msf_merge(scales.unsqueeze(1)).reshape(B, cfg.fusion_dim)  # (B,1,F,1) -> (B, F)
        fused = self.dropout(fused)
        if cfg.pseudo_token_mode == "linear1":
            h = self.out_proj(fused)  # (B, d)
            tokens = self.pseudo(h.unsqueeze(-1)).transpose(1, 2)  # (B, d, 1) -> (B, d, n) -> (B, n, d)
        else:
            per_token = self.token_expand(fused).reshape(B, cfg.num_pseudo_tokens, cfg.fusion_dim)  # (B, n, F)
            tokens = self.out_proj(per_token)  # (B, n, d)
        if cfg.has_path:
            if evidence is None:
                means = self.utterance_means(audio, audio_lengths, video, video_lengths, B, t)  # (B, Da + Dv)
                evidence = self.path_evidence(means)  # (B, K)
            tokens = tokens + self.path_proj(evidence.to(t.dtype)).unsqueeze(1)  # + (B, 1, d)
        return tokens  # (B, n, d)


def trainable_parameters_line(model_or_pair) -> str:
    """One line of trainable vs all parameters, as PEFT's ``print_trainable_parameters``.

    Args:
        model_or_pair: An ``nn.Module`` (counted by ``requires_grad``), or a pair
            ``(adapter, llm)`` whose trainable part is the adapter's trainable parameters and
            whose total is both together.

    Returns:
        ``"trainable params: 2,631,692 || all params: 6,746,048,204 || trainable%: 0.0390"``.
    """
    if isinstance(model_or_pair, (tuple, list)):
        if len(model_or_pair) != 2:
            raise MsekitError(f"model_or_pair must be a module or (adapter, llm), received {len(model_or_pair)} items")
        adapter, llm = model_or_pair
        trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
        total = sum(p.numel() for p in adapter.parameters()) + sum(p.numel() for p in llm.parameters())
    elif isinstance(model_or_pair, nn.Module):
        params = {id(p): p for p in model_or_pair.parameters()}.values()
        trainable = sum(p.numel() for p in params if p.requires_grad)
        total = sum(p.numel() for p in params)
    else:
        raise MsekitError(
            f"model_or_pair must be an nn.Module or (adapter, llm), received {type(model_or_pair).__name__}"
        )
    pct = 100.0 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"
