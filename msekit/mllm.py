"""A frozen causal LM with an MSE-Adapter plugged in: prompt assembly, loss, decoding.

Each sample becomes one left-padded sequence of input embeddings with the adapter's pseudo tokens
in it (the layout and its padding rules are in ``msekit.assembly``); the loss covers the label
tokens only. Decoding keeps only the newly generated tokens.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msekit.adapter.io import load_adapter, save_adapter
from msekit.adapter.model import MSEAdapter, trainable_parameters_line
from msekit.assembly import eos_ids, layout, left_pad, special_prefix
from msekit.decoding import NumberGrammar, grammar_for
from msekit.errors import MsekitError
from msekit.llm import llm_hidden_size
from msekit.parsing import parse_number  # lives in msekit.parsing; re-exported here
from msekit.prompts import PromptSpec
from msekit.scoring import cache_of, score_chunk


class MultimodalLLM(nn.Module):
    """A frozen LLM, its tokenizer, a trainable :class:`MSEAdapter` and a :class:`PromptSpec`.

    Args:
        llm: A causal LM from transformers that accepts ``inputs_embeds`` (frozen here).
        tokenizer: Its tokenizer (needs a pad token; ``msekit.llm.load_tokenizer`` sets one).
        adapter: The adapter; its ``llm_hidden_size`` must equal the LLM's width.
        prompt: The task's prompt spec (``msekit.prompts.get_prompt``).
        max_text_tokens: Transcripts are cut to this many tokens. With ``text_pooling ==
            "mean_all"`` (the paper) the pooled text is also padded to this length.
        label_eos: Append EOS to the label tokens (in the loss and in candidate scoring), so
            the model learns to stop after the answer. The paper does not; set False for that.
        label_prefix: Text put before each label (a space for English; none for Chinese).
        base_llm: Name of the LLM, recorded when saving.
        class_loss: Weight of a cross-entropy over the class strings' likelihoods added to the
            label-token loss in training (classification; 0: the paper's loss alone).

    Raises:
        MsekitError: If the widths differ or the tokenizer lacks a pad token.
    """

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: Any,
        adapter: MSEAdapter,
        prompt: PromptSpec,
        *,
        max_text_tokens: int = 128,
        label_eos: bool = True,
        label_prefix: str | None = None,
        base_llm: str | None = None,
        class_loss: float = 0.0,
    ) -> None:
        super().__init__()
        width = llm_hidden_size(llm)
        if adapter.config.llm_hidden_size != width:
            raise MsekitError(
                f"adapter llm_hidden_size={adapter.config.llm_hidden_size} does not match the LLM's "
                f"hidden size {width} ({base_llm or type(llm).__name__})"
            )
        if tokenizer.pad_token_id is None:
            raise MsekitError("tokenizer has no pad token; load it with msekit.llm.load_tokenizer")
        if max_text_tokens <= 0:
            raise MsekitError(f"max_text_tokens must be positive, received {max_text_tokens}")
        llm.requires_grad_(False)
        llm.eval()
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_text_tokens = int(max_text_tokens)
        self.label_eos = bool(label_eos)
        self.label_prefix = label_prefix if label_prefix is not None else ("" if prompt.language == "zh" else " ")
        self.base_llm = base_llm
        self.class_loss = float(class_loss)
        embed = llm.get_input_embeddings()
        self.adapter = adapter.to(embed.weight.device)
        self._pad = int(tokenizer.pad_token_id)
        self._eos_ids = eos_ids(tokenizer, llm)
        self._prefix = special_prefix(tokenizer)
        self._start = self._ids(prompt.start_marker)
        self._end = self._ids(prompt.end_marker)
        self._prompt_ids = self._ids(prompt.prompt)
        self._label_cache: dict[str, list[int]] = {}
        self._grammar: NumberGrammar | None = None
        self._new_tokens: int | None = None
        params = inspect.signature(llm.forward).parameters
        self._has_logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.2x names the KV cache argument `cache`; older ones `past_key_values`
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ tokens
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def label_token_ids(self, label_text: str) -> list[int]:
        """Target token ids of one label text (``label_prefix`` + text, + EOS if enabled)."""
        if label_text not in self._label_cache:
            ids = self._ids(self.label_prefix + label_text)
            if self.label_eos and self._eos_ids:
                ids = ids + [self._eos_ids[0]]
            self._label_cache[label_text] = ids
        return self._label_cache[label_text]

    def _text_ids(self, texts: list[str], stored: list[list[int]] | None = None) -> list[list[int]]:
        """The texts' token ids, cut to ``max_text_tokens``: the store's own ids when the dataset
        hands them out (``stored`` = ``batch["text_ids"]``: same tokenizer, see msekit.tokenfp),
        else the texts tokenized here."""
        if stored is not None:
            return [list(t)[: self.max_text_tokens] for t in stored]
        if not isinstance(texts, (list, tuple)):
            raise MsekitError(f"batch['text'] must be a list of strings, received {type(texts).__name__}")
        return [self._ids(t or "")[: self.max_text_tokens] for t in texts]

    def tokenizer_fingerprint(self) -> str:
        """The fingerprint of this LLM's tokenizer (msekit.tokenfp), to compare with a store's."""
        from msekit.tokenfp import fingerprint

        return fingerprint(self._ids)

    # ------------------------------------------------------------------ adapter side
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def encode(self, batch: dict[str, Any], text_ids: list[list[int]] | None = None,
               evidence: torch.Tensor | None = None) -> torch.Tensor:
        """Runs the adapter on a batch (``evidence``: see :class:`~msekit.adapter.MSEAdapter`).

        Returns:
            Pseudo tokens, (B, n, d), in the adapter's dtype.
        """
        text_ids = self._text_ids(batch["text"], batch.get("text_ids")) if text_ids is None else text_ids
        L = self.max_text_tokens if self.adapter.config.text_pooling == "mean_all" else max(
            [len(t) for t in text_ids] + [1]
        )
        ids, mask = left_pad(text_ids, L, self._pad)  # (B, L), (B, L)
        embed = self.llm.get_input_embeddings()
        text_embeds = embed(ids.to(self.device))  # (B, L, d)
        dev = self.device

        def opt(key):
            x = batch.get(key)
            return x.to(dev) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

        return self.adapter(
            text_embeds, mask.to(dev),
            opt("audio"), batch.get("audio_lengths"),
            opt("video"), batch.get("video_lengths"),
            **({"evidence": evidence.to(dev)} if evidence is not None else {}),
        )

    # ------------------------------------------------------------------ assembly
    def _assemble(
        self, text_ids: list[list[int]], pseudo: torch.Tensor, label_ids: list[list[int]] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Builds left-padded input embeddings, attention mask, position ids and targets.

        Returns:
            ``inputs_embeds`` (R, T, d), ``attention_mask`` (R, T), ``position_ids`` (R, T),
            ``targets`` (R, T) holding label token ids at label positions and -100 elsewhere.
        """
        R, n = pseudo.shape[0], pseudo.shape[1]
        bodies = [t + self._end + self._prompt_ids for t in text_ids]
        lay = layout(self._prefix + self._start, bodies, n, label_ids, self._pad)
        dev = self.device
        embeds = self.llm.get_input_embeddings()(lay.ids.to(dev))  # (R, T, d)
        pseudo = pseudo.to(embeds.dtype).reshape(R * n, -1)  # (R, n, d) -> (R*n, d), row-major like the mask
        embeds = embeds.masked_scatter(lay.is_pseudo.to(dev).unsqueeze(-1), pseudo)  # (R, T, d)
        return embeds, lay.attention_mask.to(dev), lay.position_ids.to(dev), lay.targets.to(dev)

    def _label_logprobs(
        self, text_ids: list[list[int]], pseudo: torch.Tensor, label_ids: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of the label tokens.

        Returns:
            ``logp`` (R, K) and ``valid`` (R, K) bool over the last K positions (K = longest
            label); padding and non-label positions are False in ``valid``.
        """
        embeds, attn, pos, targets = self._assemble(text_ids, pseudo, label_ids)
        K = max(len(x) for x in label_ids)
        if K == 0:
            raise MsekitError("labels: every label tokenized to nothing; check the label format")
        # Every row ends with its last label token (left padding), which predicts nothing:
        # leave that column out, and keep logits only at the K positions that predict labels.
        kwargs = {"logits_to_keep": K} if self._has_logits_to_keep else {}
        out = self.llm(inputs_embeds=embeds[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                       use_cache=False, **kwargs)
        logits = out.logits[:, -K:].float()  # (R, K, V): position p predicts token p+1
        tgt = targets[:, -K:]  # (R, K)
        valid = tgt != -100
        logp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (R, K)
        return logp * valid, valid

    # ------------------------------------------------------------------ training
    def label_texts(self, labels: torch.Tensor | list) -> list[str]:
        """Target texts of a batch of labels (floats or class indices)."""
        values = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
        return [self.prompt.format_label(y) for y in values]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean cross-entropy over the label tokens of the batch (scalar)."""
        if "labels" not in batch:
            raise MsekitError("batch needs 'labels' for the loss (use generate/score_classes to predict)")
        text_ids = self._text_ids(batch["text"], batch.get("text_ids"))
        pseudo = self.encode(batch, text_ids)  # (B, n, d)
        label_ids = [self.label_token_ids(s) for s in self.label_texts(batch["labels"])]
        if len(label_ids) != len(text_ids):
            raise MsekitError(f"batch: {len(text_ids)} texts but {len(label_ids)} labels")
        if self.class_loss and self.prompt.task == "classification":
            return self._loss_with_classes(text_ids, pseudo, batch["labels"])
        logp, valid = self._label_logprobs(text_ids, pseudo, label_ids)
        return -logp.sum() / valid.sum().clamp(min=1)

    def _loss_with_classes(self, text_ids: list[list[int]], pseudo: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The label-token loss plus ``class_loss`` x the cross-entropy over the classes.

        One scoring forward gives every class string's summed log-likelihood, (B, C): the true
        class's is the label-token loss (the same number :meth:`forward` computes without
        ``class_loss``), and a softmax over the C of them is a classifier's cross-entropy, which
        compares the answer with the other classes instead of with the whole vocabulary.
        """
        from msekit.scoring import score_chunk

        cand_ids = [self.label_token_ids(c) for c in self.prompt.class_strings()]
        scores = score_chunk(self, text_ids, pseudo, cand_ids, grad=True)  # (B, C)
        y = torch.as_tensor(labels, device=scores.device).long()  # (B,), checked by label_texts
        n_tokens = torch.tensor([len(cand_ids[c]) for c in y.tolist()], device=scores.device).sum()
        token_loss = -scores.gather(1, y.unsqueeze(1)).sum() / n_tokens.clamp(min=1)
        return token_loss + self.class_loss * torch.nn.functional.cross_entropy(scores, y)

    def train(self, mode: bool = True) -> MultimodalLLM:
        """Sets the adapter's mode; the LLM stays in eval mode (frozen, no dropout)."""
        self.training = mode
        self.adapter.train(mode)
        self.llm.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters to hand to the optimizer: the adapter's only."""
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)`` parameter counts over adapter + LLM."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.adapter.parameters()) + sum(p.numel() for p in self.llm.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> str:
        """Prints (and returns) PEFT's one-line parameter report."""
        line = trainable_parameters_line((self.adapter, self.llm))
        print(line)
        return line

    # ------------------------------------------------------------------ inference
    def number_grammar(self) -> NumberGrammar:
        """The grammar of constrained number decoding for this tokenizer and label range."""
        if self._grammar is None:
            head = self.llm.get_output_embeddings()
            V = head.weight.shape[0] if head is not None else len(self.tokenizer)
            self._grammar = grammar_for(self.tokenizer, V, self._eos_ids, self.prompt.value_range)
        return self._grammar

    def _prefill(self, batch: dict[str, Any], keep: int = 1) -> tuple[Any, torch.Tensor, torch.Tensor, list[list[int]]]:
        """Adapter + one LLM pass over the prompts, keeping logits at the last ``keep`` positions.

        Returns:
            ``(output, attention_mask (B, T), position_ids (B, T), text_ids)``; ``output`` holds
            ``logits`` (B, keep, V) (all T positions for models without ``logits_to_keep``) and
            the KV cache.
        """
        text_ids = self._text_ids(batch["text"], batch.get("text_ids"))
        pseudo = self.encode(batch, text_ids)  # (B, n, d)
        embeds, attn, pos, _ = self._assemble(text_ids, pseudo, None)
        kwargs = {"logits_to_keep": keep} if self._has_logits_to_keep else {}
        out = self.llm(inputs_embeds=embeds, attention_mask=attn, position_ids=pos, use_cache=True, **kwargs)
        return out, attn, pos, text_ids

    @torch.no_grad()
    def _greedy(self, batch: dict[str, Any], max_new_tokens: int, grammar: NumberGrammar | None) -> list[str]:
        """Greedy decoding over the KV cache; a row stops at EOS or, with ``grammar``, as soon
        as its answer is a complete number; all stop when every row has."""
        out, attn, pos, _ = self._prefill(batch)
        B = attn.shape[0]
        embed = self.llm.get_input_embeddings()
        eos = set(self._eos_ids)
        tokens: list[list[int]] = [[] for _ in range(B)]
        texts, done = [""] * B, [False] * B
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()  # (B, V)
            nxt = grammar.pick(logits, texts) if grammar is not None else logits.argmax(dim=-1).cpu()  # (B,)
            for r, t in enumerate(nxt.tolist()):
                if done[r]:
                    continue
                if t in eos:
                    done[r] = True
                    continue
                tokens[r].append(t)
                if grammar is not None:
                    texts[r] += grammar.texts.get(t, "")
                    done[r] = grammar.complete(texts[r])
            if all(done) or step + 1 == max_new_tokens:
                break
            feed = torch.tensor([self._pad if d else t for d, t in zip(done, nxt.tolist(), strict=True)], device=attn.device)
            attn = torch.cat([attn, attn.new_ones(B, 1)], dim=1)  # (B, T+1)
            pos = pos[:, -1:] + 1  # (B, 1)
            out = self.llm(inputs_embeds=embed(feed).unsqueeze(1), attention_mask=attn, position_ids=pos,  # (B, 1, d)
                           use_cache=True, **{self._cache_kw: cache_of(out)}, **self._keep_last())
        return [self.decode_new_tokens(row) for row in tokens]

    def _keep_last(self) -> dict[str, int]:
        return {"logits_to_keep": 1} if self._has_logits_to_keep else {}

    def decode_new_tokens(self, token_ids: list[int]) -> str:
        """Decodes generated tokens up to the first EOS, without special tokens."""
        cut = []
        for t in token_ids:
            if t in self._eos_ids:
                break
            cut.append(t)
        return self.tokenizer.decode(cut, skip_special_tokens=True).strip()

    def label_strings(self) -> list[str]:
        """Every label text: the classes, or the values of ``value_range`` in steps of 0.1
        (at most 2001 of them spread over the range; the range's bounds when unbounded)."""
        if self.prompt.task == "classification":
            return self.prompt.class_strings()
        low, high = self.prompt.value_range or (-3.0, 3.0)
        if not (math.isfinite(low) and math.isfinite(high)):
            low, high = -9999.9, 9999.9
        n = min(2000, int(round((high - low) / 0.1)))
        return sorted({self.prompt.format_label(low + (high - low) * i / n) for i in range(n + 1)})

    def _default_new_tokens(self) -> int:
        """The longest label string's token count + 1 (for its EOS)."""
        if self._new_tokens is None:
            self._new_tokens = max(len(self._ids(self.label_prefix + s)) for s in self.label_strings()) + 1
        return self._new_tokens

    def generate(self, batch: dict[str, Any], max_new_tokens: int | None = None) -> list[str]:
        """Greedy generation of the answer; returns only the newly generated text.

        Args:
            batch: As for :meth:`forward`; ``labels`` are ignored.
            max_new_tokens: Default: enough for the longest label (+ EOS).

        Returns:
            One stripped string per sample.
        """
        return self._greedy(batch, max_new_tokens or self._default_new_tokens(), None)

    @torch.no_grad()
    def score_candidates(self, batch: dict[str, Any], candidates: list[str], chunk_rows: int = 256) -> torch.Tensor:
        """Log-likelihood of every candidate answer text for every sample.

        One forward per chunk of samples: each row holds the prompt and every candidate's
        tokens side by side behind a 4D attention mask (see :mod:`msekit.scoring`).
        Models whose attention takes no 4D mask fall back to one full row per (sample,
        candidate), which gives the same numbers more slowly.

        Args:
            batch: As for :meth:`forward`.
            candidates: C answer texts (formatted like labels).
            chunk_rows: Samples per forward = ``chunk_rows // C`` (at least 1).

        Returns:
            (B, C) summed log-probabilities of the candidates' tokens (incl. EOS if enabled).
        """
        text_ids = self._text_ids(batch["text"], batch.get("text_ids"))
        pseudo = self.encode(batch, text_ids)  # (B, n, d)
        B, C = len(text_ids), len(candidates)
        cand_ids = [self.label_token_ids(c) for c in candidates]
        if min(len(c) for c in cand_ids) == 0:
            raise MsekitError(f"candidates: some tokenize to nothing: {candidates}")
        per_chunk = max(1, chunk_rows // C)
        scores = []
        for s in range(0, B, per_chunk):
            e = min(s + per_chunk, B)
            scores.append(score_chunk(self, text_ids[s:e], pseudo[s:e], cand_ids))
        return torch.cat(scores, dim=0)  # (B, C)

    def score_classes(self, batch: dict[str, Any]) -> torch.Tensor:
        """Log-probabilities of every class label string, one batched forward pass.

        Returns:
            (B, C) log-likelihoods; ``argmax(-1)`` is the predicted class index.
        """
        if self.prompt.task != "classification":
            raise MsekitError("score_classes: the prompt's task is regression; use predict_regression")
        return self.score_candidates(batch, self.prompt.class_strings())

    def predict_regression(
        self, batch: dict[str, Any], method: str = "constrained", max_new_tokens: int | None = None,
        step: float = 0.1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts regression values.

        ``constrained`` (default): greedy decoding restricted to tokens that keep the answer a
        prefix of a number in the label format (:class:`~msekit.decoding.NumberGrammar`),
        stopped as soon as every row holds a complete number; then :func:`parse_number`. A
        value outside ``value_range`` is clipped into it. ``grid``: scores every value of ``value_range`` in steps of ``step``
        by likelihood and takes the best (always parses; B*C forward rows, slower).

        Returns:
            ``(values (B,), parsed_ok (B,) bool)``; an unparsable answer is NaN with
            ``parsed_ok`` False, never 0.0.
        """
        if self.prompt.task != "regression":
            raise MsekitError("predict_regression: the prompt's task is classification; use score_classes")
        low, high = self.prompt.value_range or (-math.inf, math.inf)
        if method == "grid":
            if not math.isfinite(low) or not math.isfinite(high):
                raise MsekitError("predict_regression(method='grid') needs a prompt with value_range")
            n = int(round((high - low) / step))
            values = sorted({round(low + i * step, 6) for i in range(n + 1)})
            cands = [self.prompt.format_label(v) for v in values]
            best = self.score_candidates(batch, cands).argmax(dim=-1)  # (B,)
            out = torch.tensor([float(cands[i]) for i in best.tolist()])
            return out, torch.ones_like(out, dtype=torch.bool)
        if method != "constrained":
            raise MsekitError(f"method must be 'constrained' or 'grid', received {method!r}")
        texts = self._greedy(batch, max_new_tokens or self._default_new_tokens(), self.number_grammar())
        parsed = [parse_number(t) for t in texts]
        ok = torch.tensor([p is not None for p in parsed], dtype=torch.bool)
        vals = torch.tensor([min(max(p, low), high) if p is not None else math.nan for p in parsed])
        return vals, ok

    # ------------------------------------------------------------------ save / load
    def adapter_meta(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The metadata written next to the adapter weights."""
        meta = {
            "base_llm": self.base_llm or getattr(self.llm.config, "_name_or_path", None),
            "llm_hidden_size": self.adapter.config.llm_hidden_size,
            "task": self.prompt.task,
            "label_names": self.prompt.label_names,
            "prompt": self.prompt.to_dict(),
            "label_eos": self.label_eos,
            "label_prefix": self.label_prefix,
            "max_text_tokens": self.max_text_tokens,
        }
        meta.update(extra or {})
        return meta

    def save_adapter(self, out_dir: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Writes the adapter folder (adapter weights and config only, never the LLM)."""
        return save_adapter(out_dir, self.adapter, self.adapter_meta(extra_meta))

    @classmethod
    def from_adapter(
        cls, path: str | Path, llm: nn.Module, tokenizer: Any, *, feature_spec: dict[str, Any] | None = None,
    ) -> MultimodalLLM:
        """Plugs a saved adapter into an LLM, checking width and features.

        Raises:
            MsekitError: On a width or feature mismatch (naming both sides).
        """
        adapter, meta = load_adapter(path, llm_hidden_size=llm_hidden_size(llm), feature_spec=feature_spec)
        return cls(
            llm, tokenizer, adapter, PromptSpec.from_dict(meta["prompt"]),
            max_text_tokens=int(meta.get("max_text_tokens", 128)),
            label_eos=bool(meta.get("label_eos", True)),
            label_prefix=meta.get("label_prefix"),
            base_llm=meta.get("base_llm"),
        )


__all__ = ["MultimodalLLM", "parse_number"]
