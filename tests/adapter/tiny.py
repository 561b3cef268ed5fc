"""Tiny randomly initialized causal LMs (Llama, Qwen2, GPT-2) sharing SmolLM2's tokenizer."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, Qwen2Config

from msekit.llm import DEFAULT_LLM, freeze, load_tokenizer

HIDDEN = 64
KINDS = ("llama", "qwen2", "gpt2")


@lru_cache(maxsize=1)
def smol_tokenizer():
    """The offline default's tokenizer (adds no BOS, pad = eos = <|im_end|>)."""
    return load_tokenizer(DEFAULT_LLM)


@lru_cache(maxsize=1)
def bos_tokenizer():
    """The same vocabulary, but the tokenizer puts BOS in front (as Llama-2's does)."""
    tok = smol_tokenizer()
    # name_or_path is the GGUF package's folder (no tokenizer.json) when this process was the
    # first to read the tokenizer, so reload from a saved copy, whichever source it came from.
    path = Path(tempfile.mkdtemp(prefix="msekit-bos-tok-"))
    tok.save_pretrained(str(path))
    bos = AutoTokenizer.from_pretrained(str(path), add_bos_token=True)
    bos.pad_token, bos.padding_side = tok.pad_token, "left"
    assert bos("a").input_ids[0] == bos.bos_token_id
    return bos


def tiny_llm(kind: str, seed: int = 0):
    """A frozen 2-layer model of width 64 with the SmolLM2 vocabulary."""
    tok = smol_tokenizer()
    V = len(tok)
    common = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=V, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=True, **common)
    elif kind == "qwen2":
        cfg = Qwen2Config(vocab_size=V, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=True, **common)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=V, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=512, **common)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    return freeze(AutoModelForCausalLM.from_config(cfg))
