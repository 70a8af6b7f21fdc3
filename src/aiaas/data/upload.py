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


class _MultipartSink:
    """python-multipart's callbacks for one body, and what they gather.

    A callback never raises: it records a problem in ``error``, part data is ignored from
    then on, and the caller raises it once ``parser.write`` returns. File data is counted
    against ``max_bytes`` and kept as the network's own chunks: every ``_BLOCK`` bytes the
    chunk list itself moves to ``pending`` for the :class:`_Writer`, so no byte is copied.
    """

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

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self.on_part_begin,
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end,
            },
        )

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def on_part_begin(self) -> None:
        self.headers, self.name, self.filename, self.is_file = {}, None, None, False
        self.value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        disp, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        if disp != b"form-data" or b"name" not in opts:
            self.error = BadRequest("a multipart part lacks a form-data name")
            return
        self.name = opts[b"name"].decode("utf-8", "replace")
        if self.name == "file":
            self._begin_file(opts.get(b"filename", b""))
        elif len(self.upload.fields) >= _MAX_FIELDS:
            self.error = BadRequest(f"at most {_MAX_FIELDS} form fields are allowed")

    def _begin_file(self, raw_filename: bytes) -> None:
        if self.upload.path is not None:
            self.error = BadRequest("only one 'file' part is allowed")
            return
        self.is_file = True
        self.filename = raw_filename.decode("utf-8", "replace")[:255] or None
        self.handle = self.dest.open("wb")
        self.upload.path, self.upload.filename = self.dest, self.filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data if start == 0 and end == len(data) else data[start:end]  # no copy
        if self.is_file:
            self._file_data(chunk)
        else:
            self._field_data(chunk)

    def _file_data(self, chunk: bytes) -> None:
        self.upload.size += len(chunk)
        if self.upload.size > self.max_bytes:
            self.error = PayloadTooLarge(f"the file exceeds the limit of {self.max_bytes} bytes")
            return
        self.buffer.append(chunk)
        self.buffered += len(chunk)
        if self.buffered >= _BLOCK:
            self._hand_over()

    def _field_data(self, chunk: bytes) -> None:
        self.value += chunk
        if len(self.value) > _FIELD_MAX:
            self.error = PayloadTooLarge(f"form field {self.name!r} exceeds {_FIELD_MAX} bytes")

    def _hand_over(self) -> None:
        """Move the gathered chunks to ``pending`` as a list: the bytes are never copied."""
        self.pending.append(self.buffer)
        self.buffer, self.buffered = [], 0

    def on_part_end(self) -> None:
        if self.error is not None or self.name is None:
            return
        if self.is_file:
            if self.buffer:
                self._hand_over()
        else:
            try:
                self.upload.fields[self.name] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                self.error = InvalidInput(f"form field {self.name!r} is not UTF-8")

    def close_file(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class _Writer:
    """Hashes and writes blocks on two threads of their own (both release the GIL), so the
    body keeps streaming meanwhile and SHA-256 and the disk write overlap each other."""

    def __init__(self, sink: _MultipartSink) -> None:
        self.sink = sink
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
            self.sink.hasher.update(chunk)

    def _write(self, block: Block) -> None:
        assert self.sink.handle is not None
        self.sink.handle.writelines(block)

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

    async def put_all(self, blocks: list[Block]) -> None:
        """Hand ``blocks`` over in order, emptying the list."""
        while blocks:
            await self.put(blocks.pop(0))

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


def _boundary(request: Request) -> bytes:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType("send the file as multipart/form-data with a 'file' part")
    return params[b"boundary"]


async def _parse_body(
    request: Request, parser: MultipartParser, sink: _MultipartSink, writer: _Writer
) -> None:
    """Feed the body to ``parser`` as it arrives, handing each full block to ``writer``."""
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            sink.raise_error()
            await writer.put_all(sink.pending)
        parser.finalize()
    except ClientDisconnect:
        raise BadRequest("the client disconnected during the upload") from None
    except (ValueError, AssertionError):  # python-multipart parse errors (ours are no ValueError)
        raise BadRequest("the multipart body is malformed") from None
    sink.raise_error()
    await writer.put_all(sink.pending)


async def receive_upload(request: Request, dest: Path, max_bytes: int) -> Upload:
    """Parse the multipart body; the ``file`` part is written to ``dest``.

    A body that is not multipart is refused before anything starts; once the writer threads
    run, any failure deletes the partial file at ``dest`` before the error propagates.
    """
    boundary = _boundary(request)
    sink = _MultipartSink(dest, max_bytes)
    parser = sink.parser(boundary)
    writer = _Writer(sink)
    try:
        await _parse_body(request, parser, sink, writer)
        await writer.close()
        sink.close_file()
    except BaseException:
        writer.abort()
        sink.close_file()
        dest.unlink(missing_ok=True)
        raise
    if sink.upload.path is None:
        raise InvalidInput("the multipart body has no 'file' part")
    sink.upload.sha256 = sink.hasher.hexdigest()
    return sink.upload
