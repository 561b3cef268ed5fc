"""Text-only datasets from CSV: a store whose samples have no audio or video.

Two layouts:

- plain: columns ``id``, ``text`` and optionally ``label``, ``split``, ``group``.
- MELD (``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv``): columns
  ``Utterance``, ``Emotion``, ``Dialogue_ID``, ``Utterance_ID`` (and Speaker, Sentiment, ...).
  The id is ``dia<D>_utt<U>`` (MELD's clip names), the group the dialogue, the label the emotion
  and the split comes from the file name (dev -> valid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msekit.errors import MsekitError
from msekit.formats import SPLIT_ALIASES, split_from_name, write_samples
from msekit.store import Sample
from msekit.tables import check_unique, read_csv

MELD_COLUMNS = ("Utterance", "Emotion", "Dialogue_ID", "Utterance_ID")


def _rows(path: Path, warnings: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    return read_csv(path, "import", warnings, raw_columns=("text", "Utterance"))


def import_csv(paths: list[Path], out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Import text-only CSV files into a new store without modalities.

    Raises:
        MsekitError: missing columns (named), an unknown split value.
    """
    layouts = []
    samples: list[Sample] = []
    warnings: list[str] = []
    for p in map(Path, paths):
        cols, rows = _rows(p, warnings)
        if all(c in cols for c in MELD_COLUMNS):
            layouts.append("meld")
            split = split_from_name(p) or ""
            for row in rows:
                d, u = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
                samples.append(Sample(id=f"dia{d}_utt{u}" if not split else f"{split}/dia{d}_utt{u}",
                                      text=row["Utterance"], label=row["Emotion"].strip(),
                                      split=split, group=f"{split}/dia{d}"))
        elif "id" in cols and "text" in cols:
            layouts.append("plain")
            check_unique(p, [row["id"] for row in rows])
            for k, row in enumerate(rows):
                split = (row.get("split") or "").strip()
                if split and split.lower() not in SPLIT_ALIASES:
                    raise MsekitError(f"{p}: row {k + 2} has split {split!r}; use train, valid or test")
                samples.append(Sample(id=row["id"], text=row["text"] or "",
                                      label=(row.get("label") or "").strip(),
                                      split=SPLIT_ALIASES.get(split.lower(), ""),
                                      group=(row.get("group") or "").strip()))
        else:
            raise MsekitError(f"{p}: expected columns id,text[,label,split,group] or the MELD layout "
                              f"({', '.join(MELD_COLUMNS)}); got {cols}")
    settings = {"source_format": "csv", "files": [Path(p).name for p in paths], "layouts": layouts}
    n = write_samples(out, settings, {}, samples, overwrite)
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.split] = counts.get(s.split, 0) + 1
    return {"format": "csv", "samples": n, "splits": counts, "layouts": layouts,
            "warnings": warnings}
