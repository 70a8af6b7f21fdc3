"""Landlock confinement of the ingest process (skipped where the kernel has no Landlock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aiaas.sandbox import landlock

pytestmark = pytest.mark.skipif(
    landlock.abi_version() == 0, reason="this kernel has no Landlock (Linux >= 5.13)"
)

PROBE = r"""
import json, os, socket, sys
from pathlib import Path
from aiaas.sandbox import landlock
work, outside = Path(sys.argv[1]), Path(sys.argv[2])
# what aiaas.sandbox.child.start applies for ChildPaths(write=(work,)), as the ingest uses
abi = landlock.restrict(landlock.runtime_paths(), [work, "/dev/null"])
result = {"abi": abi}
def attempt(name, fn):
    try:
        fn()
        result[name] = "allowed"
    except OSError as exc:
        result[name] = "denied" if exc.errno in (1, 13) else f"errno {exc.errno}"
attempt("read_outside", lambda: outside.read_bytes())
attempt("list_outside", lambda: os.listdir(outside.parent))
attempt("write_outside", lambda: (outside.parent / "planted").write_bytes(b"x"))
attempt("api_environ", lambda: Path(f"/proc/{os.getppid()}/environ").read_bytes())
attempt("write_work", lambda: (work / "out.bin").write_bytes(b"ok"))
attempt("read_work", lambda: (work / "upload").read_bytes())
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", 5432), timeout=2).close())
import duckdb  # still importable, and usable on the work directory
con = duckdb.connect()
con.execute(f"COPY (SELECT 1 AS x) TO '{work / 'x.parquet'}' (FORMAT parquet)")
result["duckdb_in_work"] = con.execute(f"SELECT x FROM '{work / 'x.parquet'}'").fetchall()[0][0]
print(json.dumps(result))
"""


def test_ingest_process_sees_only_its_work_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "upload").write_bytes(b"a\n1\n")
    other = tmp_path / "orgs" / "org_other"  # stands in for another organization's data
    other.mkdir(parents=True)
    (other / "data.parquet").write_bytes(b"someone else's rows")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(work), str(other / "data.parquet")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["abi"] >= 1
    assert result["read_outside"] == "denied"
    assert result["list_outside"] == "denied"
    assert result["write_outside"] == "denied"
    assert result["api_environ"] == "denied"  # the parent's secrets live there
    assert result["write_work"] == "allowed"
    assert result["read_work"] == "allowed"
    assert result["duckdb_in_work"] == 1
    if result["abi"] >= 4:
        assert result["tcp_connect"] == "denied"
    assert not (other / "planted").exists()
    assert os.listdir(other) == ["data.parquet"]
