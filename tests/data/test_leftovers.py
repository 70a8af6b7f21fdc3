"""Crash leftovers are swept as soon as they are provably dead, and storage is bounded.

- Scratch: a work directory's lock is held by its (live) owner; a sweep removes every
  directory whose lock it can take, whatever its age. Tested with real SIGKILLs, of a
  process holding a work dir and of ``aiaas serve`` in the middle of an upload.
- Store: files without a version row, and the store's own temporary files, after
  ``orphan_min_age_s`` — and ``aiaas serve`` sweeps every ``sweep_interval_s``.
- Quota: a version beyond ``max_storage_bytes_per_org`` is refused, nothing stored.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiaas.data import scratch, sweep
from aiaas.storage import get_store
from tests.data.conftest import data_files
from tests.helpers import assert_problem

HOLDER = r"""
import sys, time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from aiaas.data import scratch
from aiaas.settings import Settings

settings = Settings(data_dir=Path(sys.argv[1]), _env_file=None)
work = scratch.new_work_dir(settings)
(work / "upload").write_bytes(b"x" * 1_000_000)  # a partial upload
print(work, flush=True)
time.sleep(600)
"""


def _holder(settings: Any) -> tuple[subprocess.Popen[str], Path]:
    """A process that holds a work dir (with a partial upload in it) until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(settings.data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _scratch(settings: Any) -> list[str]:
    root = settings.data_dir / "tmp" / "ingest"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _local(store: Any, org_id: str, key: str) -> Path:
    path = store.local_path(org_id, key)
    assert isinstance(path, Path)
    return path


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_scratch_of_a_killed_process_is_swept_at_once_and_live_scratch_is_kept(settings):
    dead, dead_dir = _holder(settings)
    _kill(dead)  # SIGKILL: the owner cannot clean up
    alive, alive_dir = _holder(settings)
    mine = scratch.new_work_dir(settings)  # held by this process
    try:
        assert (dead_dir / "upload").stat().st_size == 1_000_000  # fresh, but dead
        assert scratch.sweep_scratch(settings) == 1
        assert not dead_dir.exists()
        assert _scratch(settings) == sorted(
            [alive_dir.name, f"{alive_dir.name}.lock", mine.name, f"{mine.name}.lock"]
        )
        _kill(alive)
        assert scratch.sweep_scratch(settings) == 1
        assert _scratch(settings) == sorted([mine.name, f"{mine.name}.lock"])
    finally:
        if alive.poll() is None:
            _kill(alive)
        scratch.remove_work_dir(mine)
    assert _scratch(settings) == []
    assert scratch.sweep_scratch(settings) == 0


def test_unlocked_scratch_and_partial_cache_files_go_by_age(settings):
    root = settings.data_dir / "tmp" / "ingest"
    root.mkdir(parents=True)
    legacy_old, legacy_new = root / "old-style", root / "old-style-fresh"  # no lock files
    for path in (legacy_old, legacy_new):
        path.mkdir()
        (path / "upload").write_bytes(b"x")
    _age(legacy_old, 7200)
    stray_lock = root / "0123.lock"  # its directory is gone, nobody holds it
    stray_lock.write_bytes(b"")
    cache = settings.data_dir / "cache" / "orgs" / "org_x" / "datasets" / "ds" / "dsv"
    cache.mkdir(parents=True)
    partial, complete = cache / "data.tmp-abc", cache / "data.parquet"
    partial.write_bytes(b"PAR")
    complete.write_bytes(b"PAR1")
    _age(partial, 7200)
    _age(complete, 7200)
    assert scratch.sweep_scratch(settings) == 2  # the old unlocked dir, the partial download
    assert _scratch(settings) == ["old-style-fresh"]
    assert not partial.exists()
    assert complete.exists()


def test_sweep_orphans_removes_the_stores_old_temporary_files(client, tenants, upload, settings):
    created = upload(tenants.a.headers("developer"), b"a,b\n1,2\n", name="kept")
    assert created.status_code == 201, created.text
    store = get_store(settings.resolved_artifacts_url)
    org = tenants.a.org_id
    live = list(store.list(org, "datasets"))
    version_dir = _local(store, org, live[0]).parent
    old_tmp, new_tmp = version_dir / ".tmp-0ld", version_dir / ".tmp-n3w"  # put_file's temp
    old_tmp.write_bytes(b"half a parquet file")
    new_tmp.write_bytes(b"being written")
    _age(old_tmp, 7200)
    lonely = _local(store, org, "datasets/ds_gone/dsv_gone")  # only a temp file in it
    lonely.mkdir(parents=True)
    (lonely / ".tmp-x").write_bytes(b"x")
    _age(lonely / ".tmp-x", 7200)
    from aiaas.db import get_session_factory

    with get_session_factory(settings.resolved_database_url)() as session:
        assert sweep.sweep_orphans(session, store) == 2
    assert not old_tmp.exists()
    assert new_tmp.exists()
    assert not lonely.exists()
    assert not lonely.parent.exists()
    assert list(store.list(org, "datasets")) == live
    r = client.get(
        f"/api/v1/datasets/{created.json()['id']}/versions/1/download",
        headers=tenants.a.headers("viewer"),
    )
    assert r.status_code == 200


# --------------------------------------------------------------------------- aiaas serve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(settings: Any, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIAAS_")}
    env.update(
        AIAAS_ENV="test",
        AIAAS_DATA_DIR=str(settings.data_dir),
        AIAAS_HOST="127.0.0.1",
        AIAAS_PORT=str(port),
        AIAAS_LOG_LEVEL="WARNING",
        AIAAS_DATA__SWEEP_INTERVAL_S="0.5",
    )
    if settings.database_url:
        env["AIAAS_DATABASE_URL"] = settings.database_url
    with (tmp_path / f"serve-{port}.log").open("ab") as log:  # the server keeps its own fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "aiaas.cli.main", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("aiaas serve did not come up")


def _start_upload(port: int, key: str) -> socket.socket:
    """An upload that stops half-way: 6 MiB of a file announced as 100 MB."""
    boundary = "leftoverBoundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            "POST /api/v1/datasets HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            "Content-Length: 100000000\r\n\r\n"
        ).encode()
        + head
        + b"a,b\n"
        + b"1,2\n" * (6 * 1024 * 1024 // 4)
    )
    return sock


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_serve_killed_mid_upload_leaves_nothing_after_restart_and_sweeps_periodically(
    tenants, settings, tmp_path
):
    port = _free_port()
    server = _serve(settings, tmp_path, port)
    sock = None
    try:
        sock = _start_upload(port, tenants.a.keys["developer"])
        root = settings.data_dir / "tmp" / "ingest"

        def partial_upload() -> list[Path]:
            if not root.exists():
                return []
            found = [p / "upload" for p in root.iterdir() if (p / "upload").exists()]
            return [p for p in found if p.stat().st_size > 0]

        assert _wait_for(lambda: bool(partial_upload()), 30), "the upload never reached disk"
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        (left,) = partial_upload()  # where a partial upload ends up: its work dir
        assert left.parent.parent == root
    finally:
        if sock is not None:
            sock.close()
        if server.poll() is None:
            server.kill()
            server.wait()

    server = _serve(settings, tmp_path, port)
    try:
        assert _scratch(settings) == []  # swept when serve started, although it is fresh
        # While it runs: a crashed process's scratch, an old orphan version, an old temp
        # file of the store — all gone within a few sweep intervals; a fresh orphan stays.
        dead, dead_dir = _holder(settings)
        _kill(dead)
        store = get_store(settings.resolved_artifacts_url)
        org = tenants.a.org_id
        store.put_bytes(org, "datasets/ds_gone/dsv_old/data.parquet", b"PAR1")
        store.put_bytes(org, "datasets/ds_new/dsv_storing/data.parquet", b"PAR1")
        _age(_local(store, org, "datasets/ds_gone/dsv_old/data.parquet"), 7200)
        temp = _local(store, org, "datasets/ds_new/dsv_storing") / ".tmp-crashed"
        temp.write_bytes(b"x")
        _age(temp, 7200)
        assert _wait_for(
            lambda: not dead_dir.exists() and not temp.exists() and _scratch(settings) == [],
            10,
        ), (_scratch(settings), temp.exists())
        assert _wait_for(lambda: "datasets/ds_gone/dsv_old/data.parquet" not in set(
            store.list(org, "datasets")), 10)  # fmt: skip
        assert list(store.list(org, "datasets")) == ["datasets/ds_new/dsv_storing/data.parquet"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --------------------------------------------------------------------------- quota


def test_a_version_beyond_the_storage_quota_is_refused_and_nothing_is_stored(
    client, tenants, upload, settings
):
    h = tenants.a.headers("developer")
    first = upload(h, b"id,name\n1,alice\n2,bob\n", name="people")
    assert first.status_code == 201, first.text
    used = first.json()["version"]["bytes"]
    settings.data.max_storage_bytes_per_org = used + 100  # room for less than one more copy
    ds = first.json()["id"]
    before = data_files(settings)
    attempts: dict[str, Callable[[], Any]] = {
        "append": lambda: client.post(
            f"/api/v1/datasets/{ds}/rows", headers=h, json={"records": [{"id": 3}]}
        ),
        "transform": lambda: client.post(
            f"/api/v1/datasets/{ds}/versions/1/transform",
            headers=h,
            json={"steps": [{"op": "drop_duplicates"}]},
        ),
        "new version": lambda: client.post(
            f"/api/v1/datasets/{ds}/versions", headers=h, files={"file": ("v.csv", b"id\n1\n")}
        ),
        "new dataset": lambda: upload(h, b"x\n1\n", name="more"),
    }
    for what, attempt in attempts.items():
        problem = assert_problem(attempt(), 429, "quota_exceeded")
        assert f"use {used} of {used + 100} bytes" in problem["detail"], what
    assert data_files(settings) == before
    versions = client.get(f"/api/v1/datasets/{ds}/versions", headers=h).json()
    assert [v["number"] for v in versions] == [1]
    assert [d["name"] for d in client.get("/api/v1/datasets", headers=h).json()["items"]] == [
        "people"
    ]
    # another organization has its own quota
    assert upload(tenants.b.headers("developer"), b"x\n1\n", name="b").status_code == 201
    # deleting frees it; 0 means unlimited
    settings.data.max_storage_bytes_per_org = 0
    assert attempts["append"]().status_code == 201


def test_a_full_quota_refuses_an_upload_before_converting_it(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    assert upload(h, b"id\n1\n", name="one").status_code == 201
    settings.data.max_storage_bytes_per_org = 1  # already over
    problem = assert_problem(upload(h, b"not even a valid file\x00\x01", name="two"), 429)
    assert problem["code"] == "quota_exceeded"
    assert "it is full" in problem["detail"]


@pytest.mark.parametrize("value", ["-1"])
def test_quota_setting_is_validated(value):
    from pydantic import ValidationError

    from aiaas.settings import DataSettings

    with pytest.raises(ValidationError):
        DataSettings(max_storage_bytes_per_org=value)
