"""Ingest in a limited subprocess: ``python -B -m aiaas.data.ingest_worker``.

Uploaded bytes are untrusted (SECURITY-CHECKLIST: "anything that parses untrusted bytes runs
in a subprocess"), so :func:`convert_isolated` runs :func:`aiaas.data.ingest.convert_to_parquet`
in a fresh process that first limits itself: address space (``RLIMIT_AS``), CPU seconds,
the size of any file it writes (``RLIMIT_FSIZE``, with SIGXFSZ ignored so a write fails
instead of killing it), open files, no core dumps. A parser bug, a decompression or memory
bomb, or a kill can then only end that process: the caller gets a 4xx problem naming what
happened, and the API process keeps its memory and stays up.

Protocol: one JSON request on stdin; one JSON line on stdout — ``{"ok": true, "result":
{...}, "peak_rss": bytes, "sandbox_abi": n}`` or ``{"ok": false, "error": "<AiaasError
class>", "message": "..."}``. The output file is always ``work_dir / OUTPUT_NAME``; no path
crosses back. The parent rebuilds the result and maps the error class through an allow-list.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from aiaas.data.child import child_command, child_env, die_with_parent
from aiaas.data.ingest import OUTPUT_NAME, Format, IngestLimits, IngestOptions, IngestResult
from aiaas.errors import (
    AiaasError,
    InsufficientStorage,
    InvalidInput,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)

log = structlog.get_logger()

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
    """Limits of one ingest process (from ``DataSettings`` via the service)."""

    timeout_s: float = 3600.0
    address_bytes: int = 4 * 1024**3  # RLIMIT_AS; 0 = unlimited
    max_file_bytes: int = 0  # RLIMIT_FSIZE; 0 = derived from the ingest limits
    sandbox: bool = True  # Landlock, where the kernel has it


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
    max_file = isolation.max_file_bytes or (
        max(limits.max_decompressed_bytes, src.stat().st_size) + 64 * 1024**2
    )
    request = {
        "src": str(src),
        "work_dir": str(work_dir),
        "filename": filename,
        "options": dataclasses.asdict(options),
        "limits": dataclasses.asdict(limits),
        "address_bytes": int(isolation.address_bytes),
        "cpu_s": int(isolation.timeout_s * max(1, limits.threads)) + 5,
        "max_file_bytes": int(max_file),
        "sandbox": isolation.sandbox,
    }
    # The child asks for SIGKILL when its parent dies (``die_with_parent``). Linux sends that
    # signal when the *thread* that forked it exits, not only the process: this thread
    # (a request's worker thread) forks it and then waits in communicate()/wait() for as
    # long as the child lives — on a timeout or an error it kills and reaps it first — so
    # the signal comes exactly when the API process dies. Never start it from a thread
    # that returns before the child has exited.
    # The child is untrusted once it has read the upload: its answer is read back through
    # our own file descriptors (bounded), and the only path we accept from it is the one we
    # chose, checked to be a fresh regular file — not a link to someone else's data.
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            child_command("aiaas.data.ingest_worker"),
            stdin=subprocess.PIPE,
            stdout=out_file,
            stderr=err_file,
            env=child_env(),  # none of the API process's secrets
            cwd=work_dir,
            start_new_session=True,  # a timeout kills the whole group
        )
        try:
            proc.communicate(json.dumps(request).encode(), timeout=isolation.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise InvalidInput(
                f"converting the file took longer than {isolation.timeout_s:g} s; it was stopped"
            ) from None
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        out = _head(out_file, _REPLY_BYTES)
        err = _tail(err_file, 4000)
    reply = _reply(out)
    if reply is None:
        log.warning(
            "ingest_process_failed",
            returncode=proc.returncode,
            stderr=err.decode("utf-8", "replace"),
        )
        raise InvalidInput(_crash_message(proc.returncode))
    if reply.get("internal"):
        log.error("ingest_unexpected_error", stderr=err.decode("utf-8", "replace"))
    if not reply.get("ok"):
        error = _ERRORS.get(str(reply.get("error")), InvalidInput)
        message = str(reply.get("message") or "the file could not be converted")[:2000]
        raise error(message)
    try:
        r = reply["result"]
        result = IngestResult(
            parquet_path=_own_output(work_dir),
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
    except (KeyError, TypeError, ValueError):
        log.warning("ingest_process_bad_reply", returncode=proc.returncode)
        raise InvalidInput(_crash_message(proc.returncode)) from None
    return Converted(
        result=result,
        peak_rss=int(reply.get("peak_rss") or 0),
        sandbox_abi=int(reply.get("sandbox_abi") or 0),
    )


_REPLY_BYTES = 1 << 20
_FORMATS: dict[str, Format] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
_DETECTED = {"delimiter", "quote", "escape", "header", "encoding", "types_from"}


def _head(handle: IO[bytes], limit: int) -> bytes:
    handle.seek(0)
    return handle.read(limit)


def _tail(handle: IO[bytes], limit: int) -> bytes:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read(limit)


def _own_output(work_dir: Path) -> Path:
    """The converted file, if it is what a conversion leaves: a fresh, regular, unlinked file."""
    path = work_dir / OUTPUT_NAME
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ValueError("no output") from None
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.getuid():
        raise ValueError("the output is not a file the conversion wrote")
    return path


def _reply(out: bytes) -> dict[str, Any] | None:
    lines = out.strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


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


def _limit(request: dict[str, Any]) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG
    max_file = int(request["max_file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))
    cpu = int(request["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    if request["address_bytes"]:
        size = int(request["address_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
    sys.stdout.buffer.flush()


def _sandbox(work_dir: Path) -> int:
    """Landlock: read the Python installation and system libraries, write ``work_dir``."""
    from aiaas.data import landlock

    return landlock.restrict(landlock.runtime_paths(), [work_dir, "/dev/null"])


def main() -> int:
    die_with_parent()  # never outlive the API process (a restart finds no stray children)
    request: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    _limit(request)
    try:
        sandbox_abi = _sandbox(Path(request["work_dir"])) if request.get("sandbox", True) else 0
    except OSError as exc:  # the kernel has Landlock but refused our rules: say so, do not run
        message = (
            f"the ingest sandbox could not be applied ({exc.strerror or exc}); an operator can "
            "set AIAAS_DATA__INGEST_SANDBOX=false"
        )
        _answer({"ok": False, "error": "ServiceUnavailable", "message": message})
        return 0
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
        _answer({"ok": False, "error": type(exc).__name__, "message": exc.detail})
        return 0
    except MemoryError:
        _answer({"ok": False, "error": "PayloadTooLarge", "message": _MEMORY})
        return 0
    except OSError as exc:
        _answer(_os_error(exc))
        return 0
    except Exception:  # a bug or an unforeseen input: say so, and log it in the parent
        import traceback

        traceback.print_exc(file=sys.stderr)
        _answer({"ok": False, "error": "InvalidInput", "message": _UNEXPECTED, "internal": True})
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _answer(
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


_MEMORY = "converting the file needed more memory than allowed"
_UNEXPECTED = "the file could not be converted (an unexpected error; it has been logged)"


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
