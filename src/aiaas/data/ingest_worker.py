"""Ingest in a limited subprocess: ``python -B -I -m aiaas.data.ingest_worker``.

The sandbox runner starts it (:func:`aiaas.sandbox.runner.child_command`, which appends
``--parent-pid=<pid>``).

Uploaded bytes are untrusted (SECURITY-CHECKLIST: "anything that parses untrusted bytes runs
in a subprocess"), so :func:`convert_isolated` runs :func:`aiaas.data.ingest.convert_to_parquet`
in a fresh process started by :func:`aiaas.sandbox.run_child`, which first limits and
confines itself (:func:`aiaas.sandbox.child.start`: address space, CPU seconds, the size of
any file it writes, open files, no core dumps; Landlock: it writes only its work dir). A
parser bug, a decompression or memory bomb, or a kill can then only end that process: the
caller gets a 4xx problem naming what happened, and the API process keeps its memory and
stays up.

Protocol: one JSON request on stdin (in the sandbox's envelope); one JSON line on stdout —
``{"ok": true, "result": {...}, "peak_rss": bytes, "sandbox_abi": n}`` or
``{"ok": false, "error": "<AiaasError class>", "message": "..."}``. The output file is always
``work_dir / OUTPUT_NAME``; no path crosses back. The parent rebuilds the result and maps
the error class through an allow-list.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from aiaas.data.ingest import OUTPUT_NAME, Format, IngestLimits, IngestOptions, IngestResult
from aiaas.errors import (
    AiaasError,
    InsufficientStorage,
    InvalidInput,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from aiaas.sandbox import ChildLimits, ChildPaths, child, claim_output, last_json_line, run_child

log = structlog.get_logger()

_REPLY_BYTES = 1 << 20  # the child's whole stdout; its one reply line is far smaller
_FORMATS: dict[str, Format] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
_DETECTED = {"delimiter", "quote", "escape", "header", "encoding", "types_from"}
_MEMORY = "converting the file needed more memory than allowed"
_UNEXPECTED = "the file could not be converted (an unexpected error; it has been logged)"

_ERRORS: dict[str, type[AiaasError]] = {
    cls.__name__: cls
    for cls in (
        InvalidInput,
        PayloadTooLarge,
        UnsupportedMediaType,
        InsufficientStorage,
        ServiceUnavailable,
    )
}


@dataclass(frozen=True)
class Isolation:
    """Limits of one ingest process (built by :mod:`aiaas.data.limits`)."""

    timeout_s: float
    address_bytes: int  # RLIMIT_AS; 0 = unlimited
    sandbox: bool  # Landlock, where the kernel has it
    max_file_bytes: int = 0  # RLIMIT_FSIZE; 0 (always, outside tests) = from the ingest limits


@dataclass(frozen=True)
class Converted:
    result: IngestResult
    peak_rss: int  # the ingest process's high-water mark (bytes)
    sandbox_abi: int = 0  # the Landlock ABI the process confined itself with (0: none)


def convert_isolated(
    src: Path,
    work_dir: Path,
    *,
    filename: str | None,
    options: IngestOptions,
    limits: IngestLimits,
    isolation: Isolation,
) -> Converted:
    """Convert ``src`` (inside ``work_dir``) to Parquet in a limited subprocess."""
    request = {
        "src": str(src),
        "work_dir": str(work_dir),
        "filename": filename,
        "options": dataclasses.asdict(options),
        "limits": dataclasses.asdict(limits),
    }
    run = run_child(
        "aiaas.data.ingest_worker",
        request,
        _child_limits(src, limits, isolation),
        ChildPaths(cwd=work_dir, write=(work_dir,), landlock=isolation.sandbox),
    )
    if run.timed_out:
        raise InvalidInput(
            f"converting the file took longer than {isolation.timeout_s:g} s; it was stopped"
        )
    reply = None if run.overflow else last_json_line(run.output)
    if reply is None:
        log.warning("ingest_process_failed", returncode=run.returncode, stderr=run.stderr)
        raise InvalidInput(_crash_message(run.returncode))
    if reply.get("internal"):
        log.error("ingest_unexpected_error", stderr=run.stderr)
    if not reply.get("ok"):
        error = _ERRORS.get(str(reply.get("error")), InvalidInput)
        message = str(reply.get("message") or "the file could not be converted")[:2000]
        raise error(message)
    try:
        result = _checked_result(reply["result"], work_dir)
    except (KeyError, TypeError, ValueError):
        log.warning("ingest_process_bad_reply", returncode=run.returncode)
        raise InvalidInput(_crash_message(run.returncode)) from None
    return Converted(
        result=result,
        peak_rss=int(reply.get("peak_rss") or 0),
        sandbox_abi=int(reply.get("sandbox_abi") or 0),
    )


def _child_limits(src: Path, limits: IngestLimits, isolation: Isolation) -> ChildLimits:
    """The ingest process's rlimits: it may write the decompressed upload and the Parquet."""
    max_file = isolation.max_file_bytes or (
        max(limits.max_decompressed_bytes, src.stat().st_size) + 64 * 1024**2
    )
    return ChildLimits(
        timeout_s=isolation.timeout_s,
        cpu_s=int(isolation.timeout_s * max(1, limits.threads)) + 5,
        address_bytes=int(isolation.address_bytes),
        max_file_bytes=int(max_file),
        max_output_bytes=_REPLY_BYTES,
        open_files=256,
    )


def _checked_result(r: Any, work_dir: Path) -> IngestResult:
    """The child's result, re-validated field by field (raises KeyError, TypeError or
    ValueError): the child is untrusted once it has read the upload, and the only path
    accepted from it is the one we chose, checked to be a fresh regular file
    (``claim_output``), not a link to someone else's data."""
    return IngestResult(
        parquet_path=claim_output(work_dir / OUTPUT_NAME),
        row_count=int(r["row_count"]),
        columns=[(str(n), str(t)) for n, t in r["columns"]],
        source_format=_FORMATS[str(r["source_format"])],
        compression="gzip" if r["compression"] == "gzip" else None,
        detected={
            k: v
            for k, v in dict(r["detected"]).items()
            if k in _DETECTED and isinstance(v, str | bool) and len(str(v)) <= 32
        },
    )


def _crash_message(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "converting the file used more CPU time than allowed; it was stopped"
        if sig == signal.SIGKILL:
            return "converting the file needed more memory than allowed; it was stopped"
        return f"the file could not be converted (the ingest process stopped: signal {sig})"
    return "the file could not be converted within the ingest process's limits"


# --------------------------------------------------------------------------- child side


def main() -> int:
    try:  # dies with the API process, limits and confines itself (Landlock: work_dir only)
        started = child.start()
    except OSError as exc:  # the kernel has Landlock but refused our rules: say so, do not run
        message = (
            f"the ingest sandbox could not be applied ({exc.strerror or exc}); an operator can "
            "set AIAAS_DATA__INGEST_SANDBOX=false"
        )
        child.answer({"ok": False, "error": "ServiceUnavailable", "message": message})
        return 0
    request, sandbox_abi = started.request, started.landlock_abi
    from aiaas.data.ingest import convert_to_parquet

    try:
        result = convert_to_parquet(
            Path(request["src"]),
            Path(request["work_dir"]),
            filename=request["filename"],
            options=IngestOptions(**request["options"]),
            limits=IngestLimits(**request["limits"]),
        )
    except AiaasError as exc:
        child.answer({"ok": False, "error": type(exc).__name__, "message": exc.detail})
        return 0
    except MemoryError:
        child.answer({"ok": False, "error": "PayloadTooLarge", "message": _MEMORY})
        return 0
    except OSError as exc:
        child.answer(_os_error(exc))
        return 0
    except Exception:  # a bug or an unforeseen input: say so, and log it in the parent
        import traceback

        traceback.print_exc(file=sys.stderr)
        child.answer(
            {"ok": False, "error": "InvalidInput", "message": _UNEXPECTED, "internal": True}
        )
        return 0
    peak = child.peak_rss()
    child.answer(
        {
            "ok": True,
            "result": {
                "row_count": result.row_count,
                "columns": result.columns,
                "source_format": result.source_format,
                "compression": result.compression,
                "detected": result.detected,
            },
            "peak_rss": peak,
            "sandbox_abi": sandbox_abi,
        }
    )
    return 0


def _os_error(exc: OSError) -> dict[str, Any]:
    import errno

    if exc.errno == errno.EFBIG:
        error, message = "PayloadTooLarge", "converting the file would write a file over the limit"
    elif exc.errno == errno.ENOSPC:
        error, message = "InsufficientStorage", "there is not enough disk space to convert the file"
    else:
        error = "InvalidInput"
        message = f"the file could not be converted ({exc.strerror or type(exc).__name__})"
    return {"ok": False, "error": error, "message": message}


if __name__ == "__main__":
    sys.exit(main())
