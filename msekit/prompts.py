"""Task prompts and label formats, read from ``pipelines/prompts.json``.

The prompts of the MSE-Adapter paper (MOSEI, SIMS-V2, MELD, CHERMA) are stored verbatim as
presets; generic ``regression`` and ``classification`` templates get their value range or
label set filled in. A :class:`PromptSpec` is everything the LLM side needs to turn a sample
into text and a label into target tokens.

Examples:
    >>> spec = get_prompt("mosei")
    >>> spec.task, spec.format_label(-2.34), spec.start_marker
    ('regression', '-2.3', '<Multimodal>')
    >>> get_prompt("classification", label_names=["neg", "pos"]).prompt.endswith("emotion is")
    True
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from msekit.errors import MsekitError

TASKS = ("regression", "classification")
LABEL_FORMATS = ("decimal1", "signed_decimal1", "index", "name")


def pipelines_file(name: str) -> Path:
    """Locates ``pipelines/<name>``: beside the ``msekit`` package, which holds for the source
    tree, an editable install and a wheel (both packages install side by side)."""
    path = Path(__file__).resolve().parent.parent / "pipelines" / name
    if not path.is_file():
        raise MsekitError(f"{path} is missing: reinstall msekit (pip install -e .)")
    return path


def _prompts_path() -> Path:
    return pipelines_file("prompts.json")


@lru_cache(maxsize=1)
def load_prompts() -> dict[str, Any]:
    """Reads the prompt file once.

    Returns:
        The parsed ``prompts.json``: ``markers``, ``presets``, ``templates``, ``defaults``.

    Raises:
        MsekitError: If the file is missing or not valid JSON.
    """
    path = _prompts_path()
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MsekitError(f"prompt file not found: {path} (reinstall msekit)") from e
    except json.JSONDecodeError as e:
        raise MsekitError(f"prompt file {path} is not valid JSON: {e}") from e


@dataclass
class PromptSpec:
    """How a sample becomes LLM input text and a label becomes target text.

    Attributes:
        task: ``"regression"`` or ``"classification"``.
        language: ``"en"`` or ``"zh"``; picks the markers.
        start_marker: Text before the pseudo tokens, e.g. ``<Multimodal>``.
        end_marker: Text after the transcript, e.g. ``</Multimodal>``.
        prompt: The task instruction that follows the end marker.
        label_names: Class names in index order (classification only).
        value_range: ``(low, high)`` of the regression target (regression only).
        label_format: ``decimal1`` (``f"{y:.1f}"``), ``signed_decimal1`` (``f"{y:+.1f}"``),
            ``index`` (class index digits) or ``name`` (class name).
        name: The preset or template name this spec came from.
    """

    task: str
    language: str = "en"
    start_marker: str = "<Multimodal>"
    end_marker: str = "</Multimodal>"
    prompt: str = ""
    label_names: list[str] | None = None
    value_range: tuple[float, float] | None = None
    label_format: str = "decimal1"
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MsekitError(f"task must be one of {TASKS}, received {self.task!r}")
        if self.label_format not in LABEL_FORMATS:
            raise MsekitError(
                f"label_format must be one of {LABEL_FORMATS}, received {self.label_format!r}"
            )
        if self.task == "classification":
            if not self.label_names:
                raise MsekitError("label_names: a classification prompt needs the class names")
            if self.label_format not in ("index", "name"):
                raise MsekitError(
                    "label_format must be 'index' or 'name' for classification, "
                    f"received {self.label_format!r}"
                )
            self.label_names = [str(n) for n in self.label_names]
        else:
            if self.label_format not in ("decimal1", "signed_decimal1"):
                raise MsekitError(
                    "label_format must be 'decimal1' or 'signed_decimal1' for regression, "
                    f"received {self.label_format!r}"
                )
            if self.value_range is not None:
                low, high = (float(v) for v in self.value_range)
                if not low < high:
                    raise MsekitError(f"value_range must be (low, high) with low < high, received {self.value_range!r}")
                self.value_range = (low, high)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.label_names or [])

    def format_label(self, y: float | int) -> str:
        """The target text of one label, as the LLM must write it.

        Args:
            y: A float for regression, a class index for classification.

        Returns:
            ``"-2.3"``, ``"+0.5"``, ``"4"`` or ``"joy"``, depending on ``label_format``.

        Raises:
            MsekitError: If a class index is out of range or a value is not finite.
        """
        if self.task == "classification":
            idx = int(y)
            if not 0 <= idx < self.num_classes:
                raise MsekitError(f"label index must be in [0, {self.num_classes}), received {y!r}")
            return str(idx) if self.label_format == "index" else self.label_names[idx]
        value = float(y)
        if not math.isfinite(value):
            raise MsekitError(f"regression label must be finite, received {y!r}")
        value = round(value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so no "-0.0" target
        return f"{value:+.1f}" if self.label_format == "signed_decimal1" else f"{value:.1f}"

    def class_strings(self) -> list[str]:
        """Target texts of all classes in index order (classification only)."""
        if self.task != "classification":
            raise MsekitError("class_strings: only a classification prompt has classes")
        return [self.format_label(i) for i in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for adapter_config.json)."""
        d = asdict(self)
        d["value_range"] = list(self.value_range) if self.value_range is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if d.get("value_range") is not None:
            d["value_range"] = tuple(d["value_range"])
        return cls(**d)


def _markers(language: str) -> tuple[str, str]:
    markers = load_prompts()["markers"]
    if language not in markers:
        raise MsekitError(f"language must be one of {sorted(markers)}, received {language!r}")
    start, end = markers[language]
    return start, end


def get_prompt(
    name_or_task: str,
    label_names: list[str] | None = None,
    value_range: tuple[float, float] | None = None,
    language: str = "en",
    label_format: str | None = None,
) -> PromptSpec:
    """Builds the prompt spec of a paper preset or a generic task template.

    Args:
        name_or_task: A preset (``mosei``, ``sims-v2``, ``meld``, ``cherma``) or a task
            (``regression``, ``classification``).
        label_names: Class names for ``classification``; for a preset they must equal its own.
        value_range: ``(low, high)`` for ``regression`` (default ``(-3.0, 3.0)``).
        language: ``en`` or ``zh`` for a task template (presets carry their own).
        label_format: Overrides the default label format.

    Returns:
        The :class:`PromptSpec`.

    Raises:
        MsekitError: For an unknown name, a missing label set, or a preset whose label set
            differs from the one given.
    """
    data = load_prompts()
    key = name_or_task.lower()
    if key in data["presets"]:
        p = data["presets"][key]
        if label_names is not None and list(label_names) != p.get("label_names"):
            raise MsekitError(
                f"label_names: preset {key!r} has {p.get('label_names')}, received {list(label_names)}"
            )
        start, end = _markers(p["language"])
        return PromptSpec(
            task=p["task"],
            language=p["language"],
            start_marker=start,
            end_marker=end,
            prompt=p["prompt"],
            label_names=p.get("label_names"),
            value_range=tuple(p["value_range"]) if p.get("value_range") else None,
            label_format=label_format or p["label_format"],
            name=key,
        )
    if key not in data["templates"]:
        allowed = sorted(data["presets"]) + sorted(data["templates"])
        raise MsekitError(f"prompt must be one of {allowed}, received {name_or_task!r}")
    templates = data["templates"][key]
    if language not in templates:
        raise MsekitError(f"language must be one of {sorted(templates)}, received {language!r}")
    defaults = data["defaults"][key]
    start, end = _markers(language)
    if key == "regression":
        low, high = value_range if value_range is not None else defaults["value_range"]
        text = templates[language].format(low=float(low), high=float(high))
        return PromptSpec(
            task="regression", language=language, start_marker=start, end_marker=end,
            prompt=text, value_range=(float(low), float(high)),
            label_format=label_format or defaults["label_format"], name=key,
        )
    if not label_names:
        raise MsekitError("label_names: the classification template needs the class names")
    label_set = ", ".join(f"{n}:{i}" for i, n in enumerate(label_names))
    return PromptSpec(
        task="classification", language=language, start_marker=start, end_marker=end,
        prompt=templates[language].format(label_set=label_set), label_names=list(label_names),
        label_format=label_format or defaults["label_format"], name=key,
    )


def prompt_for_run(name: str | None, task: str, *, label_names: list[str] | None = None,
                   train_labels: list[float] | None = None, value_range: list[float] | None = None,
                   language: str = "en", label_format: str | None = None,
                   prompt_text: str | None = None) -> PromptSpec:
    """The prompt of a training run: a preset or the task's template, checked against the task.

    The generic ``regression`` template gets its range from ``value_range``, else from the
    training labels: [-1, 1] when every |y| <= 1 (SIMS-like), else [-3, 3] (MOSEI-like).

    Raises:
        MsekitError: a prompt made for the other task.
    """
    name = name or task
    vr = tuple(value_range) if value_range else None
    if task == "regression" and vr is None and name == "regression":
        ys = [abs(float(y)) for y in (train_labels or []) if y is not None]
        lim = 1.0 if ys and max(ys) <= 1.0 else 3.0
        vr = (-lim, lim)
    spec = get_prompt(name, label_names=label_names if task == "classification" else None,
                      value_range=vr if name == "regression" else None,
                      language=language, label_format=label_format)
    if prompt_text:
        spec.prompt, spec.name = prompt_text, f"{spec.name}+custom"
    if spec.task != task:
        raise MsekitError(f"prompt {name!r} is for {spec.task}, the store's task is {task}; "
                          f"pass --task or another --prompt")
    return spec
