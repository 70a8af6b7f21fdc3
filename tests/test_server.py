"""End to end over real HTTP: `aiaas serve` in a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_LIMITS__MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        "AIAAS_LIMITS__MAX_BODY_BYTES": str(1024 * 1024),
        "AIAAS_AUTH__ARGON2_MEMORY_KIB": "1024",
    }
    env.pop("AIAAS_DATABASE_URL", None)
    with log.open("wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "aiaas.cli.main", "serve", "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail(f"server did not get ready: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_serve_bootstrap_login_me_metrics_and_limits(tmp_path):
    data_dir, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _start(data_dir, port, log)
    try:
        _wait_ready(base, proc, log)
        first = log.read_text()
        assert "admin@localhost" in first
        assert "password:" in first
        password = first.split("password:")[1].split()[0]

        token = httpx.post(
            f"{base}/api/v1/auth/token",
            data={"username": "admin@localhost", "password": password},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        key = httpx.post(
            f"{base}/api/v1/api-keys", headers=auth, json={"name": "curl", "role": "developer"}
        ).json()["key"]
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json()["organization"]["slug"] == "default"
        assert me.json()["role"] == "developer"
        assert me.headers["x-request-id"]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'route="/api/v1/me",status="200"' in metrics

        # Streamed bodies without Content-Length (4 MiB, past both limits): nothing is kept.
        def chunks(preamble: bytes = b""):
            yield preamble
            for _ in range(64):
                yield b"x" * 65536

        def files() -> list[str]:
            return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())

        files_before = files()
        # A route without POST answers 405 before it reads the body.
        response = httpx.post(
            f"{base}/api/v1/me",
            content=chunks(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"
        assert response.json()["code"] == "method_not_allowed"
        # An upload past the upload limit (2 MiB) is cut off with 413 as it streams.
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        upload = httpx.post(
            f"{base}/api/v1/datasets",
            content=chunks(part),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "multipart/form-data; boundary=b",
            },
        )
        assert upload.status_code == 413
        assert upload.json()["detail"] == "request body exceeds the limit of 2097152 bytes"
        # The route decides the limit, not the declared type: a JSON route refuses an
        # octet-stream body unread (415), and a streamed JSON body past the JSON limit is 413.
        wrong_type = httpx.post(
            f"{base}/api/v1/api-keys",
            content=chunks(),
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
        assert wrong_type.status_code == 415
        assert wrong_type.headers["content-type"] == "application/problem+json"
        big = httpx.post(
            f"{base}/api/v1/api-keys",
            content=chunks(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert big.headers["content-type"] == "application/problem+json"
        assert big.json()["detail"] == "request body exceeds the limit of 1048576 bytes"
        assert files() == files_before
        assert key not in log.read_text()
        assert log.read_text().count(password) == 1  # printed once, never logged
    finally:
        _stop(proc)

    # A second start on the same data prints no secret again.
    log2 = tmp_path / "serve2.log"
    proc = _start(data_dir, port, log2)
    try:
        _wait_ready(base, proc, log2)
        assert "password:" not in log2.read_text()
        assert password not in log2.read_text()
    finally:
        _stop(proc)
