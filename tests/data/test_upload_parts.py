"""The multipart receiver's refusals, one per callback: each is a typed error and leaves no file."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from starlette.requests import Request

from aiaas.data.upload import receive_upload
from aiaas.errors import (
    AiaasError,
    BadRequest,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)

BOUNDARY = b"----aiaasPartsBoundary"
CSV = b"a,b\n1,2\n"


def _part(disposition: bytes, content: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content


def _body(*parts: bytes) -> bytes:
    return b"\r\n".join(parts) + b"\r\n--" + BOUNDARY + b"--\r\n"


def _field(name: str, value: bytes) -> bytes:
    return _part(b'form-data; name="' + name.encode() + b'"', value)


def _file(content: bytes = CSV, filename: bytes = b"data.csv") -> bytes:
    return _part(b'form-data; name="file"; filename="' + filename + b'"', content)


def _request(body: bytes, content_type: bytes = b"multipart/form-data; boundary=" + BOUNDARY):
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": True}

    headers = [(b"content-type", content_type)]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def _receive(request: Request, dest: Path, max_bytes: int = 1 << 20):
    return anyio.run(receive_upload, request, dest, max_bytes)


def test_fields_and_file_are_gathered(tmp_path):
    dest = tmp_path / "upload"
    body = _body(_field("name", "données".encode()), _file(), _field("sep", b","))
    upload = _receive(_request(body), dest)
    assert upload.fields == {"name": "données", "sep": ","}
    assert upload.filename == "data.csv"
    assert upload.file == dest
    assert upload.size == len(CSV)
    assert dest.read_bytes() == CSV


def test_empty_filename_is_none(tmp_path):
    upload = _receive(_request(_body(_file(filename=b""))), tmp_path / "upload")
    assert upload.filename is None


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"multipart/form-data", b"multipart/mixed; boundary=" + BOUNDARY],
)
def test_not_multipart_is_refused_before_touching_dest(tmp_path, content_type):
    dest = tmp_path / "upload"
    dest.write_bytes(b"kept")
    with pytest.raises(UnsupportedMediaType):
        _receive(_request(_body(_file()), content_type), dest)
    assert dest.read_bytes() == b"kept"


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (_body(_part(b"attachment", b"x"), _file()), BadRequest, "lacks a form-data name"),
        (_body(_file(), _file()), BadRequest, "only one 'file' part"),
        (
            _body(*(_field(f"f{i}", b"v") for i in range(33)), _file()),
            BadRequest,
            "at most 32 form fields",
        ),
        (_body(_field("name", b"x" * (64 * 1024 + 1)), _file()), PayloadTooLarge, "exceeds"),
        (_body(_field("name", b"\xff\xfe"), _file()), InvalidInput, "is not UTF-8"),
        (_body(_file(b"x" * 2048)), PayloadTooLarge, "limit of 1024 bytes"),
        (_body(_field("name", b"ds")), InvalidInput, "no 'file' part"),
        (b"--" + BOUNDARY + b"\r\ngarbage without headers end", BadRequest, "malformed"),
    ],
    ids=[
        "no-name",
        "two-files",
        "too-many-fields",
        "field-too-big",
        "field-not-utf8",
        "file-too-big",
        "no-file",
        "malformed",
    ],
)
def test_refusals_are_typed_and_leave_no_file(tmp_path, body, error, detail):
    dest = tmp_path / "upload"
    with pytest.raises(AiaasError) as raised:
        _receive(_request(body), dest, max_bytes=1024)
    assert type(raised.value) is error
    assert detail in raised.value.detail
    assert not dest.exists()
