"""The SQL sandbox through POST /api/v1/sql: joins, versions, limits and every known escape."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from aiaas.api.state import app_state
from aiaas.data.limits import sql_limits
from aiaas.settings import Settings
from tests.helpers import assert_problem

LIMITS = sql_limits(Settings())  # the defaults an operator gets

USERS = b"user_id,name\n1,alice\n2,bob\n3,carol\n"
ORDERS = b"order_id,user_id,amount\n10,1,5.5\n11,1,4.5\n12,2,10.0\n"


@pytest.fixture
def org_a(client, tenants, upload):
    h = tenants.a.headers("developer")
    users = upload(h, USERS, name="users").json()
    orders = upload(h, ORDERS, name="orders").json()
    client.post(
        f"/api/v1/datasets/{users['id']}/rows",
        headers=h,
        json={"records": [{"user_id": 4, "name": "dave"}]},
    )
    return {"headers": h, "users": users, "orders": orders}


def sql(client, headers, query, **extra):
    return client.post("/api/v1/sql", headers=headers, json={"query": query, **extra})


def test_join_versions_types_and_csv(client, org_a):
    h = org_a["headers"]
    r = sql(
        client,
        h,
        "SELECT u.name, sum(o.amount) AS total FROM users u JOIN orders o USING (user_id) "
        "GROUP BY u.name ORDER BY total DESC, u.name",  # both total 10.0: the name decides
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == [["alice", 10.0], ["bob", 10.0]]
    assert [c["type"] for c in body["columns"]] == ["string", "float"]
    assert sql(client, h, "SELECT count(*) FROM users").json()["rows"] == [[4]]
    assert sql(client, h, 'SELECT count(*) FROM "users@1"').json()["rows"] == [[3]]
    assert sql(client, h, 'SELECT count(*) FROM "users@2"').json()["rows"] == [[4]]
    r = sql(client, h, "SELECT name FROM users ORDER BY user_id LIMIT 2", format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == ["name", "alice", "bob"]


def test_viewer_can_query_and_other_org_cannot_see_names(client, tenants, org_a, upload):
    r = sql(client, tenants.a.headers("viewer"), "SELECT count(*) FROM orders")
    assert r.json()["rows"] == [[3]]
    hb = tenants.b.headers("owner")
    for q in ("SELECT * FROM users", 'SELECT * FROM "orders@1"'):
        body = assert_problem(sql(client, hb, q), 422)
        assert "does not exist" in body["detail"]
    upload(hb, b"x\n1\n", name="users")  # B's own "users" is B's data only
    assert sql(client, hb, "SELECT * FROM users").json()["rows"] == [[1]]


def test_row_limit_truncates(client, org_a, settings):
    settings.data.sql_max_rows = 5
    r = sql(client, org_a["headers"], "SELECT * FROM range(100)")
    assert r.status_code == 200
    assert r.json()["row_count"] == 5
    assert r.json()["truncated"] is True


def test_time_limit(client, org_a, settings):
    settings.data.sql_timeout_s = 1.0
    r = sql(client, org_a["headers"], "SELECT count(*) FROM range(1000000000000) a, range(10) b")
    body = assert_problem(r, 422)
    assert "time limit" in body["detail"]
    assert sql(client, org_a["headers"], "SELECT 1").status_code == 200  # still healthy


def _other_org_file(settings, tenants):
    root = settings.data_dir / "artifacts" / "orgs" / tenants.b.org_id
    return next(root.rglob("data.parquet"))


ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM read_csv('../../../../etc/passwd')",
    "SELECT * FROM read_csv('file:///etc/passwd')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
    "COPY (SELECT 1) TO '/tmp/aiaas-escape.csv'",
    "COPY users TO 'users.csv'",
    "EXPORT DATABASE '/tmp/aiaas-export'",
    "ATTACH '/tmp/aiaas-escape.db' AS x",
    "ATTACH ':memory:' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access=true",
    "RESET enable_external_access",
    "SET allowed_directories=['/']",
    "SET memory_limit='100GB'",
    "PRAGMA version",
    "CALL pragma_version()",
    "SELECT 1; SELECT 2",
    "SELECT 1; COPY (SELECT 1) TO '/tmp/x.csv'",
    "CREATE TABLE t AS SELECT 1",
    "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SELECT * FROM duckdb_secrets()",
    "DROP VIEW users",
    "SELECT getenv('HOME')",
    "SELECT * FROM secret_canary",
]


def test_escapes_refused(client, org_a):
    # one fixture, many queries: every query is its own sandbox process anyway
    for query in ESCAPES:
        r = sql(client, org_a["headers"], query)
        if r.status_code == 200:  # only a harmless empty result is acceptable
            assert query == "SELECT * FROM duckdb_secrets()", query
            assert r.json()["rows"] == []
            continue
        body = assert_problem(r, 422)
        assert "/etc" not in body["detail"] or "<path>" in body["detail"], body
    assert sql(client, org_a["headers"], "SELECT count(*) FROM users").json()["rows"] == [[4]]


def test_other_org_file_by_path_and_writes(client, tenants, org_a, upload, settings):
    upload(tenants.b.headers("owner"), b"secret\n42\n", name="b_data")
    path = _other_org_file(settings, tenants)
    body = assert_problem(
        sql(client, org_a["headers"], f"SELECT * FROM read_parquet('{path}')"), 422
    )
    assert "42" not in body["detail"]
    own = next((settings.data_dir / "artifacts" / "orgs" / tenants.a.org_id).rglob("data.parquet"))
    before = own.read_bytes()
    q = f"COPY (SELECT 1 AS x) TO '{own}' (FORMAT parquet)"
    assert_problem(sql(client, org_a["headers"], q), 422)
    assert own.read_bytes() == before


def test_connection_holds_only_own_files(client, tenants, org_a, upload, settings):
    upload(tenants.b.headers("owner"), b"x\n1\n", name="b_data")
    r = sql(client, org_a["headers"], "SELECT sql FROM duckdb_views() WHERE NOT internal")
    assert r.status_code == 200
    assert str(settings.data_dir) not in r.text  # views use paths relative to the org root
    q = "SELECT value FROM duckdb_settings() WHERE name IN ('allowed_paths', 'allowed_directories')"
    r = sql(client, org_a["headers"], q)
    assert tenants.b.org_id not in r.text
    assert tenants.a.org_id in r.text


def test_python_frame_variables_unreachable():
    from aiaas.data.sql import run_query

    secret_canary = [1, 2, 3]  # noqa: F841 - what a replacement scan would find
    with pytest.raises(Exception, match="does not exist"):
        run_query({}, "SELECT * FROM secret_canary", LIMITS)


def test_preflight_refuses_a_misconfigured_connection(tmp_path):
    import duckdb

    from aiaas.data.duck import SandboxMisconfigured, connect, verify_locked

    good = connect(allowed_paths=[tmp_path / "a.parquet"], memory_limit="256MB", threads=1)
    verify_locked(good, [tmp_path / "a.parquet"])
    good.close()
    # the order bug: external access switched off before the allow-list was set
    bad = duckdb.connect(":memory:")
    bad.execute("SET enable_external_access=false")
    with pytest.raises(duckdb.Error):
        bad.execute(f"SET allowed_paths=['{tmp_path / 'a.parquet'}']")
    with pytest.raises(SandboxMisconfigured):
        verify_locked(bad, [tmp_path / "a.parquet"])
    bad.close()
    unlocked = duckdb.connect(":memory:")
    with pytest.raises(SandboxMisconfigured, match="enable_external_access"):
        verify_locked(unlocked, [])
    unlocked.close()


def _own_worker_pid() -> int | None:
    import os

    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"aiaas.data.sql_worker" in cmd:
            return int(entry)
    return None


def _kill_worker_during(
    query: str, sig: int
) -> tuple[BaseException | None, list[MutableMapping[str, Any]]]:
    """Run ``query``, send our own query process ``sig`` while it runs: (error, logs)."""
    import os
    import threading
    import time
    from dataclasses import replace

    from structlog.testing import capture_logs

    from aiaas.data.sql import run_query

    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_query({}, query, replace(LIMITS, timeout_s=30))
        except Exception as exc:
            outcome["error"] = exc

    with capture_logs() as logs:
        thread = threading.Thread(target=run)
        thread.start()
        pid = None
        deadline = time.monotonic() + 15
        while pid is None and time.monotonic() < deadline:
            pid = _own_worker_pid()
            time.sleep(0.05)
        assert pid is not None
        time.sleep(0.5)
        os.kill(pid, sig)  # our own child, found by its parent pid
        thread.join(30)
    return outcome.get("error"), logs


def test_query_process_crash_is_logged_and_clear():
    import signal

    from aiaas.data.sql import run_query
    from aiaas.errors import InvalidInput

    error, logs = _kill_worker_during("SELECT count(*) FROM range(100000000000)", signal.SIGSEGV)
    assert isinstance(error, InvalidInput)  # the caller's query: 422, never a 500
    assert error.detail == (
        "the query process crashed (SIGSEGV); it is logged. Simplify the query, and "
        "report the request id if it persists"
    )
    logged = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["message"], e["returncode"]) for e in logged] == [
        ("sql_internal_error", "crashed (SIGSEGV)", -signal.SIGSEGV)
    ]
    # a kill at a resource limit (RLIMIT_CPU, the OOM killer) is the caller's: 422, a warning
    error, logs = _kill_worker_during("SELECT count(*) FROM range(100000000000)", signal.SIGKILL)
    assert isinstance(error, InvalidInput)
    assert error.detail == (
        "the query process was stopped at its CPU or memory limit; "
        "simplify the query or reduce its result"
    )
    assert [e["log_level"] for e in logs] == ["warning"]
    assert list(run_query({}, "SELECT 42", LIMITS).iter_rows()) == [[42]]


def test_per_org_concurrency_cap(client, tenants, settings):
    gate = app_state(client.app).data.gates.sql
    for _ in range(gate.per_org):  # org A's queries are running
        assert gate.try_acquire(tenants.a.org_id)
    try:
        assert_problem(sql(client, tenants.a.headers("viewer"), "SELECT 1"), 429)
        assert sql(client, tenants.b.headers("viewer"), "SELECT 1").status_code == 200
    finally:
        for _ in range(gate.per_org):
            gate.release(tenants.a.org_id)
    assert sql(client, tenants.a.headers("viewer"), "SELECT 1").status_code == 200
