"""Tiny stores and a tiny random LLM for fast trainer tests (no downloads, seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from msekit.store import Modality, Sample, StoreWriter

AUDIO_NAMES = [f"a{i}" for i in range(6)]
VIDEO_NAMES = [f"v{i}" for i in range(4)]


def make_store(path: Path, n_per_split=(16, 8, 8), classes=("neg", "pos"), seed: int = 0,
               regression: bool = False) -> Path:
    """A store whose class (or value) shows in the audio features only; text is the same."""
    rng = np.random.default_rng(seed)
    settings = {"extract": {"synthetic": True}, "sample_rate": 16000}
    with StoreWriter(path, settings, {"audio": AUDIO_NAMES, "video": VIDEO_NAMES}) as w:
        k = 0
        for split, n in zip(("train", "valid", "test"), n_per_split, strict=True):
            for i in range(n):
                c = i % len(classes)
                ta, tv = int(rng.integers(5, 12)), int(rng.integers(3, 6))
                shift = (2.0 * c - 1.0) if not regression else 0.0
                y = float(np.round(rng.uniform(-3, 3), 1)) if regression else None
                a = rng.normal(size=(ta, len(AUDIO_NAMES))) + (shift if not regression else y)
                v = rng.normal(size=(tv, len(VIDEO_NAMES)))
                mods = {"audio": Modality(a, np.stack([np.arange(ta), np.arange(ta) + 1], 1) / 100,
                                          np.ones(ta, bool)),
                        "video": Modality(v, np.stack([np.arange(tv), np.arange(tv) + 1], 1) / 5,
                                          np.ones(tv, bool))}
                w.add(Sample(id=f"s{k:03d}", text="a short sentence", split=split,
                             label=(f"{y:.1f}" if regression else classes[c]), modalities=mods))
                k += 1
        w.commit()
    return path


def tiny_llm(seed: int = 0):
    """A 2-layer Llama of width 64 with random weights and the default LLM's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from msekit.llm import freeze, load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    return freeze(LlamaForCausalLM(cfg)), tok


def tiny_llm_dir(path: Path, seed: int = 0) -> Path:
    """:func:`tiny_llm` saved as a local model folder, so that `--llm <folder>` and run folders
    (which reload their LLM by name) work offline, also in a subprocess."""
    if not (path / "config.json").is_file():
        llm, tok = tiny_llm(seed)
        llm.save_pretrained(path)
        tok.save_pretrained(path)
    return path


def no_nan_json(text: str):
    """json.loads that refuses NaN / Infinity (which json.dumps writes by default)."""
    import json

    def refuse(name: str):
        raise AssertionError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=refuse)
