"""The one reader of text tables (labels, transcripts, text-only imports) and of odd file names.

Text files are read as UTF-8 (a BOM is fine, CRLF line ends too); a file that is not valid
UTF-8 is decoded as cp1252 (then latin-1) with a warning, so a Windows-made CSV still loads but
the user is told. ``.tsv`` files are tab-separated, everything else comma-separated.

File names: a name the OS allows may hold bytes that are not UTF-8 (Python keeps them as lone
surrogates), which an HDF5 UTF-8 string cannot hold. ``escape_name`` writes such a name with
``%XX`` for each undecodable byte and ``%25`` for '%' (names that are valid UTF-8 are kept as
they are); ``unescape_name`` gives the original bytes back.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from msekit.errors import MsekitError


def read_text(path: str | os.PathLike, what: str, warnings: list[str]) -> str:
    """Read a text file, falling back from UTF-8 to cp1252 / latin-1 with a warning.

    Raises:
        MsekitError: the file does not exist (named, with the option ``--<what>``).
    """
    p = Path(path)
    if not p.is_file():
        raise MsekitError(f"{what} file not found: {p}; check the path given to --{what}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise MsekitError(f"{p}: cannot read the {what} file ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        for enc in ("cp1252", "latin-1"):
            try:
                text = raw.decode(enc)
            except UnicodeDecodeError:
                continue
            warnings.append(
                f"{p} is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}); decoded as "
                f"{enc}: check accented characters, or re-save the file as UTF-8"
            )
            return text
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def read_csv(path: str | os.PathLike, what: str, warnings: list[str],
             raw_columns: tuple[str, ...] = ("text",)) -> tuple[list[str], list[dict[str, str]]]:
    """Rows of a CSV / TSV table as dicts (header names and values stripped).

    Args:
        path: the table.
        what: what it is, for messages ('labels', 'transcripts', 'import').
        warnings: receives the encoding warning, if any.
        raw_columns: columns whose values keep their inner whitespace (only None -> '').

    Returns:
        (header, rows); row k (0-based) is on line k + 2 of the file.
    """
    p = Path(path)
    text = read_text(p, what, warnings)
    reader = csv.DictReader(io.StringIO(text, newline=""),
                            delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = [{k: (v or "") if k in raw_columns else (v or "").strip()
                 for k, v in r.items() if k and isinstance(v, str | type(None))} for r in reader]
    except csv.Error as e:
        raise MsekitError(f"{p} line {reader.line_num}: not a readable CSV ({e})") from None
    return header, rows


def check_unique(path: str | os.PathLike, ids: list[str]) -> None:
    """Refuse a table that gives one id twice, naming both lines (row k is on line k + 2).

    Raises:
        MsekitError: an id occurs twice.
    """
    first: dict[str, int] = {}
    for k, sid in enumerate(ids):
        if sid in first:
            raise MsekitError(f"{path}: id {sid!r} is on line {first[sid] + 2} and line {k + 2}; "
                              "each id may occur once, remove or fix one of them")
        first[sid] = k


_ESCAPE = re.compile(r"%|[\udc80-\udcff]")


def escape_name(name: str) -> str:
    """A file name as a UTF-8-safe string (unchanged when it already is one)."""
    if not any("\udc80" <= c <= "\udcff" for c in name):
        return name
    return _ESCAPE.sub(lambda m: "%25" if m.group() == "%" else f"%{ord(m.group()) - 0xDC00:02X}",
                       name)


def unescape_name(name: str) -> bytes:
    """The original bytes of a name written by ``escape_name`` from a non-UTF-8 name."""
    out = bytearray()
    k = 0
    while k < len(name):
        if name[k] == "%" and re.fullmatch(r"[0-9A-F]{2}", name[k + 1:k + 3]):
            out.append(int(name[k + 1:k + 3], 16))
            k += 3
        else:
            out += name[k].encode()
            k += 1
    return bytes(out)


def is_escaped(original: str) -> bool:
    """True when ``escape_name`` changes this name (it holds non-UTF-8 bytes)."""
    return escape_name(original) != original
