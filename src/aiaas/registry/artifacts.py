"""A saved AutoML model directory, read and checked before anything of it is stored.

The directory comes from a sandboxed training child, so it is read as untrusted: only
regular files (no links, no folders), a bounded number and size, names that are plain file
names, every file matching the SHA-256 the manifest lists (and no file it does not list),
JSON bounded and parsed into plain data. Nothing is unpickled here; the ``.skops`` file is
stored as bytes. Values that a database cannot hold as they are (NaN, a lone surrogate, a
NUL character) are replaced (:func:`storable`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiaas.errors import InvalidInput
from aiaas.storage import ArtifactStore

MANIFEST = "manifest.json"
REPORT = "report.json"
ENCODING = "encoding.json"
MAX_FILES = 32
MAX_FILE_BYTES = 4 * 1024**3  # one artifact file
MAX_JSON_BYTES = 32 * 1024**2  # manifest, report, encoding
MAX_CATEGORIES = 1000  # categories of one input column kept in the signature
LEADERBOARD_KEPT = 20  # trials of the leaderboard kept in the version's report
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    path: Path
    size: int
    sha256: str

    def entry(self) -> dict[str, Any]:
        """The version's ``artifacts`` entry for this file."""
        return {"path": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class SavedModel:
    """What a version row is made of: its files and the parsed JSON documents."""

    files: list[ArtifactFile]
    manifest: dict[str, Any]
    report: dict[str, Any]  # report.json's "report"
    leaderboard: list[dict[str, Any]]
    feature_importance: list[dict[str, Any]]
    encoding: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


def storable(value: Any) -> Any:
    """``value`` (parsed JSON) with NaN/±inf as None and strings safe for every database."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): storable(v) for k, v in value.items()}
    return value


def _text(value: str) -> str:
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def read_saved_model(model_dir: Path) -> SavedModel:
    """Check ``model_dir`` and parse it; 422 ``InvalidInput`` naming what is wrong."""
    files = [_artifact_file(p) for p in _entries(model_dir)]
    by_name = {f.name: f for f in files}
    if MANIFEST not in by_name:
        raise InvalidInput("the model directory has no manifest.json")
    manifest = _json_file(by_name[MANIFEST])
    _check_against_manifest(manifest, by_name)
    report_doc = _json_file(by_name[REPORT]) if REPORT in by_name else {}
    encoding = _json_file(by_name[ENCODING]) if ENCODING in by_name else {}
    report = report_doc.get("report")
    board = report_doc.get("leaderboard")
    return SavedModel(
        files=sorted(files, key=lambda f: f.name),
        manifest=manifest,
        report=report if isinstance(report, dict) else {},
        leaderboard=[t for t in board if isinstance(t, dict)] if isinstance(board, list) else [],
        feature_importance=_importance(report_doc.get("feature_importance")),
        encoding=encoding,
    )


def _entries(model_dir: Path) -> list[Path]:
    try:
        entries = sorted(model_dir.iterdir())
    except OSError:
        raise InvalidInput("the model directory cannot be read") from None
    if len(entries) > MAX_FILES:
        raise InvalidInput(f"the model directory holds more than {MAX_FILES} entries")
    return entries


def _artifact_file(path: Path) -> ArtifactFile:
    """A regular file with a plain name, hashed through a descriptor that follows no link."""
    if not _FILE_NAME.fullmatch(path.name):
        raise InvalidInput("the model directory holds a file with an unusable name")
    try:
        # O_NONBLOCK: a FIFO planted in the directory must not hang the worker
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        raise InvalidInput(f"{path.name} is not a regular file") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InvalidInput(f"{path.name} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")
        digest = hashlib.sha256()
        while block := handle.read(_BLOCK):
            digest.update(block)
    return ArtifactFile(path.name, path, info.st_size, digest.hexdigest())


def _json_file(file: ArtifactFile) -> dict[str, Any]:
    if file.size > MAX_JSON_BYTES:
        raise InvalidInput(f"{file.name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(file.path.read_bytes())
    except (OSError, ValueError, RecursionError):
        raise InvalidInput(f"{file.name} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{file.name} is not a JSON object")
    cleaned: dict[str, Any] = storable(doc)
    return cleaned


def _check_against_manifest(manifest: dict[str, Any], by_name: dict[str, ArtifactFile]) -> None:
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise InvalidInput("manifest.json lists no files")
    present = set(by_name) - {MANIFEST}
    if present != set(listed):
        raise InvalidInput("the model directory's files differ from those its manifest lists")
    for name, sha in listed.items():
        if by_name[name].sha256 != sha:
            raise InvalidInput(f"{name} does not match the SHA-256 in manifest.json")
    if not isinstance(manifest.get("task"), str) or not isinstance(manifest.get("metric"), str):
        raise InvalidInput("manifest.json names no task or metric")


def _importance(raw: Any) -> list[dict[str, Any]]:
    """``{feature: importance}`` as a list, most important first."""
    if not isinstance(raw, dict):
        return []
    rows = [
        {"feature": str(k), "importance": float(v)}
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    return sorted(rows, key=lambda r: (-abs(r["importance"]), r["feature"]))


def signature(saved: SavedModel) -> dict[str, Any]:
    """The input signature: each column's name, type, kind, categories seen, required or
    not (an unused column is not required; a used one may hold missing values), the output."""
    raw = saved.manifest.get("signature")
    sig = raw if isinstance(raw, dict) else {}
    specs = {
        c["name"]: c
        for c in saved.encoding.get("columns") or []
        if isinstance(c, dict) and isinstance(c.get("name"), str)
    }
    inputs = []
    for col in sig.get("inputs") or []:
        if not isinstance(col, dict) or not isinstance(col.get("name"), str):
            continue
        used = bool(col.get("used", True))
        entry: dict[str, Any] = {"name": col["name"], "type": col.get("type"), "used": used}
        entry["required"] = used
        spec = specs.get(col["name"], {})
        if isinstance(spec.get("kind"), str):
            entry["kind"] = spec["kind"]
        if isinstance(spec.get("levels"), list):
            entry["categories"] = spec["levels"][:MAX_CATEGORIES]
        inputs.append(entry)
    return {"inputs": inputs, "output": sig.get("output"), "classes": saved.manifest.get("classes")}


def metrics(saved: SavedModel, extra: dict[str, Any] | None) -> dict[str, Any]:
    """CV mean and std, holdout score, the per-metric scores if the report has them."""
    report = saved.report
    found: dict[str, Any] = {
        key: report.get(key) for key in ("cv_score", "cv_score_std", "holdout_score")
    }
    if isinstance(report.get("metrics"), dict):
        found["scores"] = report["metrics"]
    if extra:
        found.update(storable(extra))
    return found


def version_report(saved: SavedModel) -> dict[str, Any]:
    """The report kept with the version: the training report and the leaderboard's top."""
    return {**saved.report, "leaderboard": saved.leaderboard[:LEADERBOARD_KEPT]}


def upload(store: ArtifactStore, org_id: str, prefix: str, files: list[ArtifactFile]) -> None:
    """Store every file under ``prefix`` (each put is atomic; the caller cleans up on error)."""
    for file in files:
        store.put_file(org_id, f"{prefix}/{file.name}", file.path)
