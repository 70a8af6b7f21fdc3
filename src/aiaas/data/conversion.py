"""A received upload → Parquet: its parser options, the sandboxed conversion, its source.

The conversion runs in a sandboxed child (:mod:`aiaas.data.ingest_worker` through
:mod:`aiaas.sandbox`); the caller owns the work directory the file is in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog

from aiaas.data import ingest, ingest_worker
from aiaas.data.limits import ingest_isolation, ingest_limits
from aiaas.errors import InvalidInput
from aiaas.settings import Settings

log = structlog.get_logger()

_UPLOAD_CHOICES: dict[str, tuple[str, ...]] = {
    "format": ("csv", "parquet", "jsonl"),
    "encoding": ("utf-8", "utf-16", "latin-1"),
}
_ONE_CHAR_OPTIONS = ("delimiter", "quote", "escape")


@dataclass(frozen=True)
class UploadedFile:
    """A received upload: the file (inside a private work dir) and its form fields."""

    path: Path
    filename: str | None
    size: int
    sha256: str
    fields: dict[str, str]


def _option(fields: dict[str, str], key: str) -> str | None:
    value = fields.get(key)
    if value is None or value == "":
        return None
    if key in _ONE_CHAR_OPTIONS:
        value = value.replace("\\t", "\t")
        if len(value) != 1:
            raise InvalidInput(f"option {key!r} must be one character")
    allowed = _UPLOAD_CHOICES.get(key)
    if allowed is not None and value not in allowed:
        raise InvalidInput(f"option {key!r} must be one of {', '.join(allowed)}")
    return value


def upload_options(fields: dict[str, str]) -> ingest.IngestOptions:
    """The parser options of an upload's form fields (``format``, ``delimiter``, …)."""
    header = fields.get("header")
    if header not in (None, "", "true", "false", "1", "0"):
        raise InvalidInput("option 'header' must be true or false")
    return ingest.IngestOptions(
        format=cast("ingest.Format | None", _option(fields, "format")),  # one of the choices
        delimiter=_option(fields, "delimiter"),
        quote=_option(fields, "quote"),
        escape=_option(fields, "escape"),
        header=None if header in (None, "") else header in ("true", "1"),
        encoding=cast("ingest.Encoding | None", _option(fields, "encoding")),
    )


def source_from_upload(
    result: ingest.IngestResult, filename: str | None, size: int, sha256: str
) -> dict[str, Any]:
    return {
        "kind": "upload",
        "filename": filename,
        "format": result.source_format,
        "compression": result.compression,
        "bytes": size,
        "sha256": sha256,
        "options": result.detected,
    }


def convert_upload(
    settings: Settings,
    src: Path,
    *,
    filename: str | None = None,
    options: ingest.IngestOptions | None = None,
) -> ingest.IngestResult:
    """Convert an untrusted file (inside its work dir) to Parquet in a sandboxed child."""
    started = time.perf_counter()
    converted = ingest_worker.convert_isolated(
        src,
        src.parent,
        filename=filename,
        options=options or ingest.IngestOptions(),
        limits=ingest_limits(settings),
        isolation=ingest_isolation(settings),
    )
    log.info(
        "dataset_converted",
        rows=converted.result.row_count,
        convert_s=round(time.perf_counter() - started, 3),
        convert_peak_rss_mib=round(converted.peak_rss / 2**20),
        sandbox_abi=converted.sandbox_abi,
    )
    return converted.result
