"""Configuration of the MSE-Adapter: one dataclass, saved as JSON next to every adapter."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from msekit.errors import MsekitError

TEXT_POOLING_MODES = ("mean_real", "mean_all")
PSEUDO_TOKEN_MODES = ("linear1", "full")
INIT_MODES = ("scaled", "paper")  # see msekit.adapter.init
SEQ_POOLING_MODES = ("last", "mean")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MsekitError(f"{name} must be a positive integer, received {value!r}")
    return value


@dataclass
class AdapterConfig:
    """Hyper-parameters of :class:`msekit.adapter.MSEAdapter`.

    The defaults are the paper's MOSEI configuration except for the feature dimensions,
    ``text_pooling`` (msekit averages over real tokens; ``"mean_all"`` is the paper's),
    ``seq_pooling`` (msekit averages the LSTM outputs; ``"last"`` is the paper's) and ``init``.

    Examples:
        >>> cfg = AdapterConfig(llm_hidden_size=4096, audio_dim=74, video_dim=35)
        >>> cfg.has_audio, cfg.msf_hidden_sizes
        (True, (512, 128, 256))
    """

    llm_hidden_size: int = field(
        default=0, metadata={"help": "Hidden size d of the frozen LLM (4096 for LLaMA2-7B); 0: not known yet "
                             "(a training config: msekit train sets it from the LLM)."}
    )
    audio_dim: int | None = field(
        default=0, metadata={"help": "Audio feature dim; 0 or None = no audio modality (text-only store)."}
    )
    video_dim: int | None = field(
        default=0, metadata={"help": "Video feature dim; 0 or None = no video modality (text-only store)."}
    )
    audio_hidden: int = field(default=64, metadata={"help": "Hidden size of the audio LSTM (paper: 64/64/64/32)."})
    video_hidden: int = field(default=32, metadata={"help": "Hidden size of the video LSTM (paper: 32/64/32/16)."})
    fusion_dim: int = field(default=256, metadata={"help": "Width of the Text-Guide-Mixer and fusion (paper: 256)."})
    num_pseudo_tokens: int = field(default=4, metadata={"help": "Number n of pseudo tokens fed to the LLM (paper: 4)."})
    text_pooling: str = field(
        default="mean_real",
        metadata={"help": "'mean_real' averages real text tokens; 'mean_all' also padding (paper)."},
    )
    pseudo_token_mode: str = field(
        default="linear1",
        metadata={
            "help": "'linear1': paper's Linear(1 -> n), rank-1 tokens; 'full': n distinct tokens "
            "from Linear(fusion -> n*fusion) before the shared projection to d (+n*fusion^2 params)."
        },
    )
    seq_pooling: str = field(
        default="mean",
        metadata={"help": "What the audio/video LSTMs hand on: 'mean' of their outputs over the real "
                          "frames, or the 'last' hidden state (paper; the paper presets set it)."},
    )
    msf_divisors: tuple[int, int, int] = field(
        default=(8, 32, 16),
        metadata={"help": "Multi-Scale-Fusion bottlenecks are d // k for each k (paper: 8, 32, 16)."},
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the fused vector (paper: 0)."})
    linear_path: bool = field(
        default=False,
        metadata={"help": "Add a linear path from the audio/video utterance means to the pseudo tokens, "
                          "warm-started from a linear probe fitted on the train split (msekit.adapter.probe; "
                          "the warm start is validated and kept unless an epoch beats it; on in the demo preset, off "
                          "in the paper presets: the probe's level on small stores, for a read-out fit of ~41 LLM passes)."},
    )
    path_outputs: int = field(
        default=0,
        metadata={"help": "Outputs of the linear path: the number of classes, 1 for regression; 0: no path "
                          "(msekit train sets it from the task when linear_path is on)."},
    )
    init: str = field(
        default="scaled",
        metadata={"help": "'scaled': rescale on 32 training samples so the input shows in the pseudo "
                          "tokens at the LLM's embedding scale (msekit.adapter.init); 'paper': PyTorch's "
                          "default init, as the authors.", "flag": "--adapter-init"},
    )

    def __post_init__(self) -> None:
        if self.llm_hidden_size != 0:
            _positive_int("llm_hidden_size", self.llm_hidden_size)
        for name in ("audio_dim", "video_dim"):
            value = getattr(self, name)
            if value is None:
                value = 0
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MsekitError(f"{name} must be a non-negative integer or None, received {value!r}")
            setattr(self, name, value)
        if isinstance(self.path_outputs, bool) or not isinstance(self.path_outputs, int) or self.path_outputs < 0:
            raise MsekitError(f"path_outputs must be a non-negative integer, received {self.path_outputs!r}")
        for name in ("audio_hidden", "video_hidden", "fusion_dim", "num_pseudo_tokens"):
            _positive_int(name, getattr(self, name))
        if self.text_pooling not in TEXT_POOLING_MODES:
            raise MsekitError(
                f"text_pooling must be one of {TEXT_POOLING_MODES}, received {self.text_pooling!r}"
            )
        if self.pseudo_token_mode not in PSEUDO_TOKEN_MODES:
            raise MsekitError(
                f"pseudo_token_mode must be one of {PSEUDO_TOKEN_MODES}, received {self.pseudo_token_mode!r}"
            )
        if self.seq_pooling not in SEQ_POOLING_MODES:
            raise MsekitError(f"seq_pooling must be one of {SEQ_POOLING_MODES}, received {self.seq_pooling!r}")
        divisors = tuple(self.msf_divisors)
        if len(divisors) != 3:
            raise MsekitError(f"msf_divisors must hold 3 integers, received {self.msf_divisors!r}")
        for k in divisors:
            _positive_int("msf_divisors", k)
            if self.llm_hidden_size and self.llm_hidden_size // k == 0:
                raise MsekitError(
                    f"msf_divisors: llm_hidden_size {self.llm_hidden_size} // {k} is 0; "
                    f"use an LLM width >= {k} or smaller divisors"
                )
        self.msf_divisors = divisors
        if self.init not in INIT_MODES:
            raise MsekitError(f"init must be one of {INIT_MODES}, received {self.init!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise MsekitError(f"dropout must be in [0, 1), received {self.dropout!r}")

    @property
    def has_audio(self) -> bool:
        """Whether the adapter has an audio branch."""
        return self.audio_dim > 0

    @property
    def has_video(self) -> bool:
        """Whether the adapter has a video branch."""
        return self.video_dim > 0

    @property
    def has_path(self) -> bool:
        """Whether the adapter has the linear path (on, sized, and some audio/video to read)."""
        return self.linear_path and self.path_outputs > 0 and (self.has_audio or self.has_video)

    @property
    def msf_hidden_sizes(self) -> tuple[int, int, int]:
        """Bottleneck widths of the three Multi-Scale-Fusion MLPs."""
        return tuple(self.llm_hidden_size // k for k in self.msf_divisors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        d = asdict(self)
        d["msf_divisors"] = list(self.msf_divisors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterConfig:
        """Builds a config from :meth:`to_dict` output.

        Raises:
            MsekitError: If ``d`` holds unknown keys (e.g. a file of another version).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MsekitError(f"adapter config: unknown keys {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        d.setdefault("seq_pooling", "last")  # written before the option existed: the paper's read-out
        d.setdefault("linear_path", False)  # likewise: no linear path
        d.setdefault("path_outputs", 0)
        if "msf_divisors" in d:
            d["msf_divisors"] = tuple(d["msf_divisors"])
        return cls(**d)
