"""What the API process holds for a SQL result, how sandbox failures surface, CSV formulas.

- The query process serializes the result and caps it by its serialized size; the API process
  reads at most that (plus a margin), checks it and streams it row by row: a result whose Arrow
  buffers are tiny but whose Python objects are huge (lists of NULLs) does not grow the server.
- An internal failure of the query process is logged (``sql_internal_error``) and is a clear
  500; the caller's own query errors stay 422 and are not logged as errors.
- Text cells that a spreadsheet would run as a formula are neutralized in CSV output (SQL
  and downloads); JSON and Parquet are not altered.
"""

from __future__ import annotations

import gc
import io
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import assert_problem

MiB = 1024 * 1024


def sql(client, headers, query, **extra):
    return client.post("/api/v1/sql", headers=headers, json={"query": query, **extra})


# --------------------------------------------------------------------------- memory bound


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


class _PeakRss:
    """The peak resident size of this process while the block runs, above its start."""

    def __enter__(self) -> _PeakRss:
        gc.collect()
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.start = _status_kib("VmRSS")
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_kib("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.peak = max(self.peak, _status_kib("VmHWM"))
        self.growth_mib = (self.peak - self.start) / 1024


HOSTILE = "SELECT list_resize([], 5000) AS l FROM range(10000)"  # Arrow: offsets only; Python: 5e7


def test_hostile_result_does_not_grow_the_api_process(client, tenants, settings):
    settings.data.sql_max_bytes = 16 * MiB
    received = 0
    body = bytearray()
    with _PeakRss() as peak:
        with client.stream(
            "POST", "/api/v1/sql", headers=tenants.a.headers("viewer"), json={"query": HOSTILE}
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            for chunk in r.iter_bytes():
                received += len(chunk)
                if len(body) < 200:
                    body += chunk[:200]
                tail = chunk[-100:]
    assert peak.growth_mib < 200, f"the API process grew by {peak.growth_mib:.0f} MiB"
    row = "[" + ",".join(["null"] * 5000) + "]"
    head = '{"columns":[{"name":"l","type":"string","physical":"list<l: null>"}],"rows":[['
    assert bytes(body).startswith(head.encode())
    # the cap counts each serialized row plus its line break in the query process
    rows = 16 * MiB // (len(row) + 3)
    assert tail.endswith(f'],"row_count":{rows},"truncated":true}}'.encode())
    assert received < 16 * MiB + 1000


def test_query_out_of_memory_is_the_callers_422(client, tenants):
    q = "SELECT list_resize([], 1000000) FROM range(10000)"  # DuckDB's memory limit stops it
    with capture_logs() as logs:
        body = assert_problem(sql(client, tenants.a.headers("viewer"), q), 422, "invalid_input")
    assert body["detail"].startswith("Out of Memory Error: ")
    assert _errors(logs) == []


def test_byte_cap_counts_serialized_rows_not_arrow_buffers(client, tenants, settings):
    settings.data.sql_max_bytes = 1024  # a NULL column has no Arrow buffers at all
    r = sql(client, tenants.a.headers("viewer"), "SELECT NULL AS n FROM range(5000)")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == [{"name": "n", "type": "string", "physical": "null"}]
    assert body["truncated"] is True
    assert body["row_count"] == 1024 // len("[null]\n")
    assert body["rows"] == [[None]] * body["row_count"]


def test_strict_json_values_unchanged(client, tenants):
    q = """SELECT 'nan'::DOUBLE AS f, '-inf'::DOUBLE AS g, DATE '2024-01-02' AS d,
    TIMESTAMP '2024-01-02 03:04:05.5' AS ts, TIMESTAMPTZ '2024-01-02 03:04:05+00' AS tz,
    '\\x01\\x02'::BLOB AS b, 1.25::DECIMAL(5,2) AS dec, [1, NULL] AS l,
    {'a': 1, 'b': [true]} AS s, MAP {'k': 2} AS m, INTERVAL 90 MINUTE AS i,
    TIME '12:00:01' AS t, NULL AS n, true AS yes, 'é"' AS txt, 1 AS a, 2 AS a,
    12345678901234567890::HUGEINT AS h"""
    r = sql(client, tenants.a.headers("viewer"), q)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["name"], c["type"]) for c in body["columns"]] == [
        ("f", "float"),
        ("g", "float"),
        ("d", "datetime"),
        ("ts", "datetime"),
        ("tz", "datetime"),
        ("b", "string"),
        ("dec", "float"),
        ("l", "string"),
        ("s", "string"),
        ("m", "string"),
        ("i", "string"),
        ("t", "string"),
        ("n", "string"),
        ("yes", "boolean"),
        ("txt", "string"),
        ("a", "integer"),
        ("a", "integer"),
        ("h", "float"),
    ]
    assert body["rows"] == [
        [
            None,
            None,
            "2024-01-02",
            "2024-01-02T03:04:05.500000",
            "2024-01-02T03:04:05+00:00",
            "AQI=",
            1.25,
            [1, None],
            {"a": 1, "b": [True]},
            [["k", 2]],
            [0, 0, 5400000000000],
            "12:00:01",
            None,
            True,
            'é"',
            1,
            2,
            1.2345678901234567e19,
        ]
    ]
    assert body["row_count"] == 1
    assert body["truncated"] is False


# --------------------------------------------------------------------------- the child's answer


def _answer(lines: list[bytes], max_rows: int = 10, max_bytes: int = 1000):
    from aiaas.data.sql import ChildAnswer

    answer = ChildAnswer(max_rows=max_rows, max_bytes=max_bytes, spool=io.BytesIO())
    for line in lines:
        answer.feed(line)
    return answer.finish()


HEADER = b'{"ok":true,"columns":[{"name":"a","type":"integer","physical":"int32"}]}\n'


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([b"not json\n"], "the first line is not a JSON object"),
        ([b'{"ok":true,"columns":[{"name":1}]}\n'], "malformed columns"),
        ([HEADER, b"[NaN]\n"], "row 1 is not strict JSON"),
        ([HEADER, b"[1,2]\n"], "row 1 has 2 values, expected 1"),
        ([HEADER, b'{"a":1}\n'], "the trailer does not close the answer"),
        ([HEADER, b"[1]\n"], "the answer has no trailer"),
        (
            [HEADER, b'[1]\n{"end":true,"ok":true,"truncated":false,"row_count":2}\n'],
            "the trailer counts 2 rows, 1 were sent",
        ),  # fmt: skip
        (
            [HEADER, b'{"end":true,"ok":true,"truncated":false,"row_count":0}\n[1]\n'],
            "data after the trailer",
        ),  # fmt: skip
        ([HEADER, b"[1]\n" * 11], "more than 10 rows"),
        ([HEADER, b'["' + b"x" * 2000 + b'"]\n'], "more than 1000 bytes"),
        ([HEADER, b'["\xff"]\n'], "row 1 is not strict JSON"),
        ([HEADER, b'["\\ud800"]\n'], "row 1 is not strict JSON"),
    ],
)
def test_the_parent_checks_the_child_answer(lines, reason):
    from aiaas.data.sql import ChildProtocolError

    with pytest.raises(ChildProtocolError) as info:
        _answer(lines)
    assert str(info.value) == reason


def test_the_parent_reads_a_bounded_amount():
    from aiaas.data.sql import ChildAnswer, ChildProtocolError

    answer = ChildAnswer(max_rows=10, max_bytes=1000, spool=io.BytesIO())
    answer.feed(HEADER)

    def endless_line() -> None:  # never a larger buffer, however long the line
        for _ in range(100_000):
            answer.feed(b"x" * 65536)

    with pytest.raises(ChildProtocolError, match="^more than 1000 bytes$"):
        endless_line()
    assert answer.buffered_bytes == 65536


# --------------------------------------------------------------------------- internal failures


def _errors(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("log_level") in ("error", "critical")]


def test_internal_failure_is_logged_and_clear(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    assert upload(h, b"x\n1\n", name="broken").status_code == 201
    root = settings.data_dir / "artifacts" / "orgs" / tenants.a.org_id
    next(root.rglob("data.parquet")).write_bytes(b"this is not a parquet file")
    with capture_logs() as logs:
        r = sql(client, h, "SELECT 1 AS one")
    body = assert_problem(r, 500, "internal")
    assert body["detail"] == (
        'internal error of the SQL sandbox: the view "broken@1" could not be created. '
        "It is logged; report the request id if it persists."
    )
    errors = _errors(logs)
    assert [e["event"] for e in errors] == ["sql_internal_error"]
    assert errors[0]["message"] == 'the view "broken@1" could not be created'
    assert errors[0]["debug"].startswith("Invalid Input Error: No magic bytes found at end of file")
    assert errors[0]["returncode"] == 0


def test_query_errors_stay_422_and_are_not_logged_as_errors(client, tenants):
    h = tenants.a.headers("viewer")
    with capture_logs() as logs:
        for query in ("SELECT * FROM nope", "SELEC 1", "COPY (SELECT 1) TO 'x.csv'"):
            assert_problem(sql(client, h, query), 422, "invalid_input")
    assert _errors(logs) == []


# --------------------------------------------------------------------------- CSV formulas

FORMULAS = b'=cmd,score,note\n=1+2,-1.5,-x\n+a,2.0,@c\n"\tt",-3.0,"\rr"\nplain,4.0,\n'


def test_download_csv_neutralizes_formulas(client, tenants, upload):
    h = tenants.a.headers("developer")
    ds = upload(h, FORMULAS, name="f").json()["id"]
    r = client.get(f"/api/v1/datasets/{ds}/versions/1/download?format=csv", headers=h)
    assert r.status_code == 200
    assert r.content == (
        b'"\'=cmd","score","note"\n'
        b'"\'=1+2",-1.5,"\'-x"\n'
        b'"\'+a",2,"\'@c"\n'
        b'"\'\tt",-3,"\'\rr"\n'
        b'"plain",4,\n'
    )
    parquet = client.get(f"/api/v1/datasets/{ds}/versions/1/download?format=parquet", headers=h)
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column_names == ["=cmd", "score", "note"]
    assert table.column("=cmd").to_pylist() == ["=1+2", "+a", "\tt", "plain"]


def test_sql_csv_neutralizes_formulas(client, tenants, upload):
    h = tenants.a.headers("developer")
    upload(h, FORMULAS, name="f")
    r = sql(client, h, "SELECT *, -1 AS neg, '-1' AS neg_text FROM f", format="csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.content == (
        b"'=cmd,score,note,neg,neg_text\n"
        b"'=1+2,-1.5,'-x,-1,'-1\n"
        b"'+a,2.0,'@c,-1,'-1\n"
        b"'\tt,-3.0,\"'\rr\",-1,'-1\n"
        b"plain,4.0,,-1,'-1\n"
    )
    r = sql(client, h, "SELECT * FROM f")  # JSON is not altered
    assert json.loads(r.content)["rows"][0] == ["=1+2", -1.5, "-x"]
    assert [c["name"] for c in r.json()["columns"]] == ["=cmd", "score", "note"]


def test_wait_for_no_leftover_query_processes():
    # every test above ran its query process to the end (or had it killed)
    deadline = time.monotonic() + 5
    from tests.data.test_sql import _own_worker_pid

    while _own_worker_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _own_worker_pid() is None
