"""The streamed multipart receiver: exact bytes and SHA-256 whatever the network chunking."""

from __future__ import annotations

import hashlib
import random

import anyio
import pytest
from starlette.requests import Request

from aiaas.data.upload import receive_upload
from aiaas.errors import PayloadTooLarge

BOUNDARY = b"----aiaasBoundary7MA4YWxk"


def _body(content: bytes, name: str = "ds") -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="name"\r\n\r\n' + name.encode() + b"\r\n"
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="data.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n"
        b"--" + BOUNDARY + b"--\r\n"
    )


def _request(body: bytes, sizes: list[int]) -> Request:
    pieces, at = [], 0
    for size in sizes:
        if at >= len(body):
            break
        pieces.append(body[at : at + size])
        at += size
    if at < len(body):
        pieces.append(body[at:])
    messages = iter(pieces)

    async def receive() -> dict[str, object]:
        try:
            chunk = next(messages)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)],
    }
    return Request(scope, receive)


@pytest.mark.parametrize(
    "chunking", ["one", "tiny", "network", "random"], ids=lambda c: f"chunks-{c}"
)
def test_bytes_and_sha256_are_exact_across_blocks(tmp_path, chunking):
    rng = random.Random(7)
    # 9.5 MiB: crosses the 4 MiB hand-over twice; includes the boundary's prefix bytes
    content = b"a,b\n" + b"".join(
        b"%d,%s\n" % (i, b"--" + BOUNDARY[:-1] if i % 9973 == 0 else b"x" * rng.randint(0, 40))
        for i in range(400_000)
    )
    body = _body(content)
    sizes = {
        "one": [len(body)],
        "tiny": [7] * 20_000 + [1 << 20] * 20,  # many tiny chunks first
        "network": [65_536] * (len(body) // 65_536 + 1),
        "random": [rng.randint(1, 300_000) for _ in range(len(body) // 1000)],
    }[chunking]
    dest = tmp_path / "upload"
    upload = anyio.run(receive_upload, _request(body, sizes), dest, 1 << 30)
    assert upload.fields == {"name": "ds"}
    assert upload.filename == "data.csv"
    assert upload.size == len(content)
    assert dest.read_bytes() == content
    assert upload.sha256 == hashlib.sha256(content).hexdigest()


def test_limit_crossed_mid_stream_leaves_no_file(tmp_path):
    content = b"a\n" + b"1\n" * 3_000_000  # 6 MiB
    dest = tmp_path / "upload"
    with pytest.raises(PayloadTooLarge):
        anyio.run(receive_upload, _request(_body(content), [65_536] * 200), dest, 5 << 20)
    assert not dest.exists()
