"""Streamed multipart upload: the ``file`` part goes straight to disk, counted and hashed.

Starlette's ``request.form()`` spools file parts to a temporary file with no total cap and
then we would copy it again; here the body is parsed as it arrives (python-multipart's push
parser), the file part's network chunks are handed over in 4 MiB batches (never copied) to
two threads that write them and compute their SHA-256, off the event loop. The byte limit is
ours — crossing it is a 413 and the partial file is deleted. Small text fields (``name``,
options) are capped at 64 KiB each, 32 fields in all.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from aiaas.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

_FIELD_MAX = 64 * 1024
_MAX_FIELDS = 32
_BLOCK = 4 * 1024 * 1024
Block = list[bytes]  # network chunks handed to the hash and write threads together


@dataclass
class Upload:
    path: Path | None = None
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        """The received file; :func:`receive_upload` never returns an upload without one."""
        assert self.path is not None
        return self.path


class _State:
    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.headers: dict[bytes, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name: str | None = None
        self.filename: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.handle: BinaryIO | None = None
        self.hasher = hashlib.sha256()
        self.upload = Upload()
        self.error: Exception | None = None
        self.pending: list[Block] = []


class _Writer:
    """Hashes and writes blocks on two threads of their own (both release the GIL), so the
    body keeps streaming meanwhile and SHA-256 and the disk write overlap each other."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.error: BaseException | None = None
        self.aborted = False
        self.queues: list[queue.Queue[Block | None]] = [queue.Queue(maxsize=4) for _ in range(2)]
        self.threads = [
            threading.Thread(target=self._run, args=(q, work), name=name, daemon=True)
            for q, work, name in zip(
                self.queues,
                (self._hash, self._write),
                ("upload-hash", "upload-write"),
                strict=True,
            )
        ]
        for thread in self.threads:
            thread.start()

    def _hash(self, block: Block) -> None:
        for chunk in block:
            self.state.hasher.update(chunk)

    def _write(self, block: Block) -> None:
        assert self.state.handle is not None
        self.state.handle.writelines(block)

    def _run(self, blocks: queue.Queue[Block | None], work: Callable[[Block], None]) -> None:
        while (block := blocks.get()) is not None:
            if self.error is None and not self.aborted:
                try:
                    work(block)
                except BaseException as exc:  # reported to the request by put/close
                    self.error = exc

    async def put(self, block: Block) -> None:
        if self.error is not None:
            raise self.error
        for blocks in self.queues:
            try:
                blocks.put_nowait(block)
            except queue.Full:
                await anyio.to_thread.run_sync(blocks.put, block)

    def _finish(self) -> None:
        for blocks in self.queues:
            blocks.put(None)  # a thread drains without working once aborted, then exits
        for thread in self.threads:
            thread.join()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._finish)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.aborted = True
        if any(thread.is_alive() for thread in self.threads):
            self._finish()


async def receive_upload(request: Request, dest: Path, max_bytes: int) -> Upload:
    """Parse the multipart body; the ``file`` part is written to ``dest``."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType("send the file as multipart/form-data with a 'file' part")
    st = _State(dest, max_bytes)

    def on_part_begin() -> None:
        st.headers, st.name, st.filename, st.is_file = {}, None, None, False
        st.value = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        st.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        st.header_value += data[start:end]

    def on_header_end() -> None:
        st.headers[st.header_field.lower()] = st.header_value
        st.header_field, st.header_value = b"", b""

    def on_headers_finished() -> None:
        disp, opts = parse_options_header(st.headers.get(b"content-disposition", b""))
        if disp != b"form-data" or b"name" not in opts:
            st.error = BadRequest("a multipart part lacks a form-data name")
            return
        st.name = opts[b"name"].decode("utf-8", "replace")
        if st.name == "file":
            if st.upload.path is not None:
                st.error = BadRequest("only one 'file' part is allowed")
                return
            st.is_file = True
            raw = opts.get(b"filename", b"")
            st.filename = raw.decode("utf-8", "replace")[:255] or None
            st.handle = st.dest.open("wb")
            st.upload.path, st.upload.filename = st.dest, st.filename
        elif len(st.upload.fields) >= _MAX_FIELDS:
            st.error = BadRequest(f"at most {_MAX_FIELDS} form fields are allowed")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if st.error is not None:
            return
        chunk = data if start == 0 and end == len(data) else data[start:end]  # no copy
        if st.is_file:
            st.upload.size += len(chunk)
            if st.upload.size > st.max_bytes:
                st.error = PayloadTooLarge(f"the file exceeds the limit of {st.max_bytes} bytes")
                return
            st.buffer.append(chunk)
            st.buffered += len(chunk)
            if st.buffered >= _BLOCK:  # handed over as a list: the bytes are never copied
                st.pending.append(st.buffer)
                st.buffer, st.buffered = [], 0
        else:
            st.value += chunk
            if len(st.value) > _FIELD_MAX:
                st.error = PayloadTooLarge(f"form field {st.name!r} exceeds {_FIELD_MAX} bytes")

    def on_part_end() -> None:
        if st.error is not None or st.name is None:
            return
        if st.is_file:
            if st.buffer:
                st.pending.append(st.buffer)
                st.buffer, st.buffered = [], 0
        else:
            try:
                st.upload.fields[st.name] = st.value.decode("utf-8")
            except UnicodeDecodeError:
                st.error = InvalidInput(f"form field {st.name!r} is not UTF-8")

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    writer = _Writer(st)
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if st.error is not None:
                    raise st.error
                while st.pending:
                    await writer.put(st.pending.pop(0))
            parser.finalize()
        except ClientDisconnect:
            raise BadRequest("the client disconnected during the upload") from None
        except (ValueError, AssertionError) as exc:  # python-multipart parse errors
            if isinstance(exc, PayloadTooLarge | BadRequest | InvalidInput):
                raise
            raise BadRequest("the multipart body is malformed") from None
        if st.error is not None:
            raise st.error
        while st.pending:
            await writer.put(st.pending.pop(0))
        await writer.close()
        if st.handle is not None:
            st.handle.close()
            st.handle = None
    except BaseException:
        writer.abort()
        if st.handle is not None:
            st.handle.close()
        dest.unlink(missing_ok=True)
        raise
    if st.upload.path is None:
        raise InvalidInput("the multipart body has no 'file' part")
    st.upload.sha256 = st.hasher.hexdigest()
    return st.upload
