"""CSV and JSONL lists of ``(path, label)`` rows, and the check that a listed path stays inside its root."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path, PurePosixPath

from .errors import DatasetError, ManifestError

MAX_CLASSES = 1_000_000  # a numeric label beyond this is an error, not a million-entry class table


def safe_rel(text: str, where: str) -> str:
    """``text`` as a relative POSIX path; :class:`ManifestError` naming ``where`` if it is empty or escapes."""
    if not text or "\x00" in text:
        raise ManifestError(f"{where}: empty or invalid path")
    rel = PurePosixPath(text.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise ManifestError(f"{where}: path {text!r} escapes the dataset root; use a path relative to the list file")
    return rel.as_posix()


def _parse_label(value: object, where: str) -> int | str:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise ManifestError(f"{where}: missing or invalid label {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ManifestError(f"{where}: invalid label {value!r}; use a class index or a class name")
    if isinstance(value, (int, float)):
        return int(value)
    text = value.strip()
    if not text:
        raise ManifestError(f"{where}: empty label")
    return int(text) if (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) else text


def read_list(path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(relative path, class index), ...], classes)`` of a CSV (``path,label``, optional header) or JSONL
    (``{"path": ..., "label": ...}``) list; labels are class indices, or class names mapped in sorted order.

    Raises:
        DatasetError: the file cannot be read or lists nothing.
        ManifestError: naming the row, for a bad row, label or path, or a repeated path.
    """
    rows: list[tuple[str, int | str, str]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the image list ({exc})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "path" not in row or "label" not in row:
                raise ManifestError(f"{where}: expected an object with 'path' and 'label'")
            rows.append((safe_rel(str(row["path"]), where), _parse_label(row["label"], where), where))
    else:
        reader = csv.reader(io.StringIO(text))
        for number, row in enumerate(reader, 1):
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path.name} row {number}"
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise ManifestError(f"{where}: expected 'path,label', got {row!r}")
            rows.append((safe_rel(row[0].strip(), where), _parse_label(row[1], where), where))
    if not rows:
        raise DatasetError(f"{path}: the image list is empty")
    named = sorted({label for _, label, _ in rows if isinstance(label, str)})
    if named and any(isinstance(label, int) for _, label, _ in rows):
        raise ManifestError(f"{path}: labels mix class names and numbers; use one or the other")
    if named:
        classes = named
        index = {name: i for i, name in enumerate(classes)}
    else:
        top = max(int(label) for _, label, _ in rows)
        bad = next(((where, label) for _, label, where in rows if int(label) < 0), None)
        if bad:
            raise ManifestError(f"{bad[0]}: negative label {bad[1]}")
        if top >= MAX_CLASSES:
            where = next(where for _, label, where in rows if int(label) == top)
            raise ManifestError(f"{where}: label {top} is out of range (at most {MAX_CLASSES - 1}); labels are class "
                                "indices 0..C-1 or class names")
        classes = [str(i) for i in range(top + 1)]
        index = {}
    listed: list[tuple[str, int]] = []
    seen: dict[str, str] = {}
    for rel, label, where in rows:
        if rel in seen:
            raise ManifestError(f"{where}: duplicate path {rel!r} (first at {seen[rel]})")
        seen[rel] = where
        listed.append((rel, index[label] if isinstance(label, str) else int(label)))
    return listed, classes
