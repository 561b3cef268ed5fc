"""What to extract: media discovery, sample ids, transcripts and labels.

Media discovery
    Inputs are files or folders; folders are searched recursively for the video extensions in
    ``VIDEO_EXTS``. A file named explicitly with another extension is a per-item failure (stage
    ``input``); files with other extensions inside a folder (CSVs, notes) are only counted and
    reported in one warning. The same file reached twice (a folder and a file in it) counts once.

Sample ids
    The id of a file is its stem (``clips/abc.mp4`` -> ``abc``). With an MMSA / CH-SIMS label
    table (columns ``video_id, clip_id``) the id is ``f"{video_id}/{clip_id}"``, taken from the
    media path ``.../Raw/<video_id>/<clip_id>.mp4`` as ``<parent folder>/<stem>``. Two files with
    the same id are both refused (a per-item failure naming both paths): a label or transcript
    could not say which one it means. Ids may hold any characters, '/' and spaces included.

Transcripts (``--transcripts``), one of
    * CSV ``id,text`` with an optional ``words`` column holding word timings as JSON:
      ``[["hello", 0.12, 0.40], ...]`` or ``[{"word": "hello", "start": 0.12, "end": 0.40}, ...]``;
    * CSV ``id,word,start,end``: one row per word; the text is the words joined by spaces;
    * JSON ``{"<id>": "text"}`` or ``{"<id>": {"text": "...", "words": [...]}}`` (words as above).

Labels (``--labels``), one of
    * CSV ``id,label[,split][,group][,text]``;
    * the MMSA-FET / CH-SIMS ``label.csv``: ``video_id,clip_id,text,label,...,mode`` where the id
      is ``video_id/clip_id``, the group is ``video_id`` and the split comes from ``mode``.
    A ``text`` column in the labels provides transcripts (a ``--transcripts`` file wins).

Text files are read by ``msekit.tables`` (UTF-8 with a BOM or not, CRLF, a cp1252 / latin-1
fallback with a warning). An id given twice in a labels or transcripts table is an error naming
both lines.

File names with bytes that are not UTF-8 become samples too: their id and source are escaped
(``msekit.tables.escape_name``, ``%XX`` per byte) and the original bytes are kept in the
store's ``source_bytes`` column.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from msekit.errors import MsekitError
from msekit.labels import SPLIT_ALIASES, SPLIT_NAMES
from msekit.media import VIDEO_EXTENSIONS as VIDEO_EXTS
from msekit.tables import check_unique, escape_name, read_csv, read_text

__all__ = ["VIDEO_EXTS", "Item", "Plan", "Problem", "load_labels", "load_transcripts",
           "plan_inputs", "read_text"]
SPLITS = SPLIT_NAMES


@dataclass
class Item:
    """One media file to extract, with what the tables say about it."""

    id: str
    path: Path
    text: str = ""
    label: str = ""
    split: str = ""
    group: str = ""
    words: list[str] = field(default_factory=list)
    word_times: list[tuple[float, float]] = field(default_factory=list)
    has_transcript: bool = False


@dataclass
class Problem:
    """An input that cannot become a sample (recorded as a failure with stage ``input``)."""

    id: str
    path: str
    reason: str


@dataclass
class Transcript:
    text: str
    words: list[str] = field(default_factory=list)
    word_times: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class LabelRow:
    label: str = ""
    split: str = ""
    group: str = ""
    text: str | None = None
    given: frozenset[str] = frozenset({"label"})  # the fields the table has a column for


@dataclass
class Plan:
    """The result of ``plan_inputs``: items to extract, refused inputs and warnings."""

    items: list[Item]
    problems: list[Problem]
    warnings: list[str]
    orphan_ids: list[str]  # ids in the tables without a media file
    no_transcript: int  # media files without a transcript (text '')
    defined: frozenset[str] = frozenset()  # sample fields the tables set: label, split, group, text


def _rows(path: str | os.PathLike, what: str, warnings: list[str]) -> tuple[list[str], list[dict]]:
    return read_csv(path, what, warnings)


def _parse_words(value: object, where: str) -> tuple[list[str], list[tuple[float, float]]]:
    """Word timings from JSON: [[w, start, end], ...] or [{"word", "start", "end"}, ...]."""
    if isinstance(value, str):
        if not value.strip():
            return [], []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise MsekitError(f"{where}: words column is not JSON ({e.msg}); expected "
                              '[["word", start, end], ...]') from None
    words, times = [], []
    for w in value or []:
        try:
            if isinstance(w, dict):
                word, start, end = w["word"], w["start"], w["end"]
            else:
                word, start, end = w
            words.append(str(word))
            times.append((float(start), float(end)))
        except (KeyError, TypeError, ValueError):
            raise MsekitError(f"{where}: bad word timing {w!r}; expected [word, start, end] or "
                              '{"word": ..., "start": ..., "end": ...}') from None
    return words, times


def load_transcripts(path: str | os.PathLike, warnings: list[str]) -> dict[str, Transcript]:
    """Read a transcripts file (see the module docstring for the accepted layouts).

    Raises:
        MsekitError: the file is missing or has none of the accepted layouts.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(p, "transcripts", warnings),
                              object_pairs_hook=lambda kv: _unique_keys(p, kv))
        except json.JSONDecodeError as e:
            raise MsekitError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict):
            raise MsekitError(f"{p}: expected a JSON object {{id: text or {{text, words}}}}")
        out = {}
        for sid, v in data.items():
            if isinstance(v, str):
                out[str(sid)] = Transcript(v)
            elif isinstance(v, dict):
                words, times = _parse_words(v.get("words"), f"{p} id {sid!r}")
                text = v.get("text") or " ".join(words)
                out[str(sid)] = Transcript(str(text), words, times)
            else:
                raise MsekitError(f"{p}: id {sid!r} must map to a string or {{text, words}}")
        return out
    header, rows = _rows(p, "transcripts", warnings)
    if "id" not in header:
        raise MsekitError(f"{p}: transcripts need an 'id' column; found {header}")
    out: dict[str, Transcript] = {}
    if {"word", "start", "end"} <= set(header):  # long format: one row per word
        per_id: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
        for n, r in enumerate(rows, start=2):
            try:
                per_id[r["id"]].append((float(r["start"]), r["word"].strip(), float(r["end"])))
            except ValueError:
                raise MsekitError(f"{p} line {n}: start/end must be seconds, got "
                                  f"{r['start']!r}, {r['end']!r}") from None
        for sid, ws in per_id.items():
            ws.sort()
            out[sid] = Transcript(" ".join(w for _, w, _ in ws), [w for _, w, _ in ws],
                                  [(s, e) for s, _, e in ws])
        return out
    if "text" not in header:
        raise MsekitError(f"{p}: transcripts need columns id,text (optional words) or "
                          f"id,word,start,end; found {header}")
    check_unique(p, [r["id"] for r in rows])
    for n, r in enumerate(rows, start=2):
        words, times = _parse_words(r.get("words", ""), f"{p} line {n}")
        out[r["id"]] = Transcript(r["text"].strip(), words, times)
    return out


def _unique_keys(path: Path, pairs: list[tuple[str, object]]) -> dict:
    seen: dict[str, object] = {}
    for k, v in pairs:
        if k in seen:
            raise MsekitError(f"{path}: key {k!r} occurs twice in one JSON object; each id may "
                              "occur once, remove or fix one of them")
        seen[k] = v
    return seen


def _split(value: str, where: str) -> str:
    s = value.strip().lower()
    if s and s not in SPLIT_ALIASES:
        raise MsekitError(f"{where}: split must be one of {sorted(SPLIT_ALIASES)} (or empty), "
                          f"got {value!r}")
    return SPLIT_ALIASES.get(s, "")


def load_labels(path: str | os.PathLike, warnings: list[str]) -> tuple[dict[str, LabelRow], bool]:
    """Read a labels table.

    Returns:
        (id -> LabelRow, mmsa) where mmsa is True for the MMSA-FET / CH-SIMS layout, whose ids
        are ``video_id/clip_id``.

    Raises:
        MsekitError: the file is missing or lacks the id / label columns.
    """
    p = Path(path)
    header, rows = _rows(p, "labels", warnings)
    mmsa = {"video_id", "clip_id"} <= set(header)
    if not mmsa and "id" not in header:
        raise MsekitError(f"{p}: labels need columns id,label[,split] or the MMSA layout "
                          f"video_id,clip_id,text,label,mode; found {header}")
    if "label" not in header:
        raise MsekitError(f"{p}: labels need a 'label' column; found {header}")
    out: dict[str, LabelRow] = {}
    check_unique(p, [f"{r['video_id']}/{r['clip_id']}" if mmsa else r["id"] for r in rows])
    cols = set(header)
    given = frozenset({"label"} | ({"split", "group"} if mmsa and "mode" in cols else
                                   {"group"} if mmsa else set())
                      | ({"split"} & cols) | ({"group"} & cols) | ({"text"} & cols))
    for n, r in enumerate(rows, start=2):
        if mmsa:
            sid = f"{r['video_id']}/{r['clip_id']}"
            group, split = r["video_id"], _split(r.get("mode", ""), f"{p} line {n}")
        else:
            sid, group, split = r["id"], r.get("group", ""), _split(r.get("split", ""), f"{p} line {n}")
        text = r["text"].strip() if "text" in header else None
        out[sid] = LabelRow(r["label"], split, group, text, given)
    return out, mmsa


def discover(inputs: list[str | os.PathLike]) -> tuple[list[Path], list[Problem], dict[str, int]]:
    """Find media files under ``inputs``.

    Returns:
        (video files in input order, explicit files refused, {extension: count} of other files
        skipped inside folders).

    Raises:
        MsekitError: an input path does not exist.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    skipped: dict[str, int] = defaultdict(int)
    seen: set[Path] = set()

    def add(f: Path) -> None:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            files.append(f)

    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.name.startswith("."):
                    continue
                if not f.is_file():
                    if not f.is_dir():
                        skipped["not regular files (FIFOs, sockets, broken links)"] += 1
                    continue
                if f.suffix.lower() in VIDEO_EXTS:
                    add(f)
                else:
                    skipped[f.suffix.lower() or "(none)"] += 1
        elif p.is_file():
            if p.suffix.lower() in VIDEO_EXTS:
                add(p)
            else:
                problems.append(Problem(escape_name(p.stem), escape_name(str(p)),
                                        f"unsupported extension {escape_name(p.suffix)!r}; "
                                        f"msekit extracts {', '.join(VIDEO_EXTS)} (convert with "
                                        f"ffmpeg -i {escape_name(p.name)} out.mp4)"))
        elif p.exists() or p.is_symlink():
            problems.append(Problem(escape_name(p.stem), escape_name(str(p)),
                                    "not a regular file (a FIFO, device, socket or broken / looping "
                                    "symlink); give the video file itself"))
        else:
            raise MsekitError(f"input not found: {escape_name(str(p))}; give video files or folders")
    return files, problems, dict(skipped)


def plan_inputs(
    inputs: list[str | os.PathLike],
    transcripts: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    transcribe: bool = False,
) -> Plan:
    """Discover media, assign ids and attach transcripts and labels.

    Items and problems come out sorted by (id, path), the order extraction commits them in.
    With ``transcribe`` (ASR on) videos without a transcript are not warned about.
    """
    warnings: list[str] = []
    files, problems, skipped = discover(inputs)
    if skipped:
        kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
        warnings.append(f"skipped files that are not videos ({kinds}); msekit extracts "
                        f"{', '.join(VIDEO_EXTS)}")
    label_rows, mmsa = load_labels(labels, warnings) if labels else ({}, False)
    trans = load_transcripts(transcripts, warnings) if transcripts else {}
    if not trans:  # a labels table with a text column doubles as transcripts
        trans = {k: Transcript(v.text) for k, v in label_rows.items() if v.text is not None}

    by_id: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        sid = escape_name(f"{f.parent.name}/{f.stem}" if mmsa else f.stem)
        by_id[sid].append(f)
    items: list[Item] = []
    for sid, paths in by_id.items():
        if len(paths) > 1:
            for f in paths:
                others = ", ".join(escape_name(str(o)) for o in paths if o != f)
                problems.append(Problem(sid, escape_name(str(f)), f"duplicate sample id {sid!r}: also {others}; "
                                        "ids are file stems, rename one of the files"))
            continue
        item = Item(sid, paths[0])
        if sid in label_rows:
            row = label_rows[sid]
            item.label, item.split, item.group = row.label, row.split, row.group
        if sid in trans:
            t = trans[sid]
            item.text, item.words, item.word_times = t.text, t.words, t.word_times
            item.has_transcript = True
        items.append(item)

    media_ids = set(by_id)
    orphans = sorted((set(label_rows) | set(trans)) - media_ids)
    if orphans:
        show = ", ".join(repr(o) for o in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        warnings.append(f"{len(orphans)} id(s) in the transcripts/labels have no video: {show}")
    no_text = sum(not it.has_transcript for it in items)
    if transcribe:
        pass  # they get ASR text
    elif no_text and (transcripts or label_rows):
        missing = [it.id for it in items if not it.has_transcript]
        show = ", ".join(repr(o) for o in missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.append(f"{no_text} video(s) have no transcript (text ''): {show}")
    elif no_text:
        warnings.append("no --transcripts given: every sample's text is ''")
    items.sort(key=lambda it: (it.id, str(it.path)))
    problems.sort(key=lambda pr: (pr.id, pr.path))
    defined = frozenset().union(*(r.given for r in label_rows.values())) | (
        {"text"} if trans else set())
    return Plan(items, problems, warnings, orphans, no_text, defined)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """Parse ``K/N`` (1-based K) into (K, N).

    Raises:
        MsekitError: not of the form K/N with 1 <= K <= N.
    """
    if shard is None or isinstance(shard, tuple):
        k_n = shard
    else:
        try:
            k, n = (int(x) for x in str(shard).split("/"))
        except ValueError:
            raise MsekitError(f"--shard must be K/N (e.g. 1/4), got {shard!r}") from None
        k_n = (k, n)
    if k_n is not None and not (1 <= k_n[0] <= k_n[1]):
        raise MsekitError(f"--shard K/N needs 1 <= K <= N, got {k_n[0]}/{k_n[1]}")
    return k_n


def in_shard(index: int, shard: tuple[int, int] | None) -> bool:
    """Round-robin sharding over the sorted ids: entry i belongs to shard (i % N) + 1."""
    return shard is None or index % shard[1] == shard[0] - 1
