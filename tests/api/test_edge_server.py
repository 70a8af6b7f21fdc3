"""The HTTP edge of a real `aiaas serve` under attack: huge and slow requests (issue 8, 1 + 14).

Over real sockets, because the header limits live in the server protocol
(``aiaas.api.server``) and the memory that matters is the server process's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.test_server import _free_port, _stop, _wait_ready

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


def _vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field in bytes (VmHWM: peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    """(base URL, server pid, an owner API key) of a server with short edge timeouts."""
    data_dir = tmp_path_factory.mktemp("edge")
    log = data_dir.parent / "edge-serve.log"
    port = _free_port()
    env = {
        **os.environ,
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_AUTH__ARGON2_MEMORY_KIB": "1024",
        "AIAAS_LIMITS__HEADER_TIMEOUT_S": "1",
        "AIAAS_LIMITS__BODY_TIMEOUT_S": "1",
    }
    env.pop("AIAAS_DATABASE_URL", None)
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiaas.cli.main", "serve", "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        key = subprocess.run(
            [sys.executable, "-m", "aiaas.cli.main", "admin", "create-api-key"]
            + ["--org", "default", "--role", "owner", "--name", "edge"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield base, proc.pid, key
    finally:
        _stop(proc)


def _raw(port: int, payload: bytes, *, wait: float = 0.0, timeout: float = 10.0) -> bytes:
    """Send ``payload`` (ignoring a reset once the server gave up), then read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            pass
        time.sleep(wait)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_huge_bodies_of_every_type_leave_server_memory_flat(server):
    base, pid, key = server

    def body() -> Iterator[bytes]:
        block = b"x" * MiB
        for _ in range(64):
            yield block

    attacks = [
        (path, content_type, auth)
        for path in ("/api/v1/auth/token", "/api/v1/api-keys", "/api/v1/sql", "/api/v1/members")
        for content_type in ("multipart/form-data; boundary=x", "application/octet-stream")
        for auth in (None, f"Bearer {key}")
    ]

    def attack(case: tuple[str, str, str | None]) -> int:
        path, content_type, auth = case
        headers = {"Content-Type": content_type}
        if auth:
            headers["Authorization"] = auth
        try:
            return httpx.post(base + path, content=body(), headers=headers, timeout=60).status_code
        except httpx.HTTPError:  # the server answered and closed while we were still sending
            return -1

    httpx.get(base + "/healthz")
    before = _vm(pid, "VmHWM")
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attack, attacks))
    grown = _vm(pid, "VmHWM") - before
    assert set(statuses) <= {401, 413, 415, -1}, statuses
    assert grown < 48 * MiB, f"server peak memory grew by {grown / MiB:.0f} MiB"
    assert httpx.get(base + "/healthz").status_code == 200


def test_oversized_headers_are_431_and_not_buffered(server):
    base, pid, _ = server
    before = _vm(pid, "VmHWM")
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 * MiB) + b"\r\n\r\n"
    answer = _raw(_port(base), payload)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"code":"headers_too_large"' in answer
    assert _vm(pid, "VmHWM") - before < 16 * MiB
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n"
    assert _raw(_port(base), many).startswith(b"HTTP/1.1 431 ")


def test_normal_headers_still_pass(server):
    base, _, key = server
    headers = {"Authorization": f"Bearer {key}", "X-Padding": "p" * 8000}
    assert httpx.get(base + "/api/v1/me", headers=headers).status_code == 200


def test_slow_headers_are_cut_off(server):
    base, _, _ = server
    started = time.monotonic()
    answer = _raw(_port(base), b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a", timeout=10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 5
    # An idle connection that never sends a byte is closed too.
    with socket.create_connection(("127.0.0.1", _port(base)), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 5


def test_a_half_sent_body_is_a_408(server):
    base, _, key = server
    head = (
        "POST /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _raw(_port(base), head + b'{"name": "k', timeout=10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer
    assert time.monotonic() - started < 5
