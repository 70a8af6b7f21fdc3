"""Ingest: round trips for every format, and hostile files → 4xx, no version row, no files."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import data_files
from tests.helpers import assert_problem


def _download(client, headers, ds, number=1):
    r = client.get(
        f"/api/v1/datasets/{ds}/versions/{number}/download?format=parquet", headers=headers
    )
    assert r.status_code == 200, r.text
    return pq.read_table(io.BytesIO(r.content))


def _ok(upload, headers, content, **kw):
    r = upload(headers, content, **kw)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize(
    ("content", "filename", "expected_rows", "fields"),
    [
        (b"a,b\n1,x\n2,y\n", "plain.csv", 2, {}),
        (b"a\tb\n1\tx, with comma\n2\ty\n", "tabs.tsv", 2, {}),
        (b"a;b\n1;x\n2;y\n", "semi.csv", 2, {}),
        (b"a|b\n1|x\n2|y\n", "pipe.txt", 2, {"delimiter": "|"}),
        (gzip.compress(b"a,b\n1,x\n2,y\n3,z\n", mtime=0), "data.csv.gz", 3, {}),
        (b'{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n', "data.jsonl", 2, {}),
        (b"1,x\n2,y\n", "noheader.csv", 2, {"header": "false"}),
    ],
    ids=["csv", "tsv", "semicolon", "pipe", "gzip", "jsonl", "no-header"],
)
def test_formats_round_trip(client, tenants, upload, content, filename, expected_rows, fields):
    h = tenants.a.headers("developer")
    body = _ok(upload, h, content, filename=filename, **fields)
    assert body["version"]["row_count"] == expected_rows
    table = _download(client, h, body["id"])
    assert table.num_rows == expected_rows
    assert table.column(0).to_pylist()[:2] == [1, 2]


def test_parquet_upload(client, tenants, upload):
    h = tenants.a.headers("developer")
    buf = io.BytesIO()
    src = pa.table({"x": [1, 2, 3], "y": ["a", None, "c"], "z": [0.5, 1.5, None]})
    pq.write_table(src, buf)
    body = _ok(upload, h, buf.getvalue(), filename="t.parquet")
    assert [c["type"] for c in body["version"]["schema"]] == ["integer", "string", "float"]
    assert _download(client, h, body["id"]).to_pydict() == src.to_pydict()


def test_csv_details_quotes_bom_latin1_empty_vs_missing_dates(client, tenants, upload):
    h = tenants.a.headers("developer")
    content = (
        b"\xef\xbb\xbfid,text,note,day,ts\n"
        b'1,"line one\nline two","",2024-01-31,2024-01-31T10:11:12\n'
        b'2,"say ""hi""",,2024-02-29,2024-02-29 23:59:59\n'
    )
    body = _ok(upload, h, content)
    schema = {c["name"]: c["type"] for c in body["version"]["schema"]}
    assert schema == {
        "id": "integer",
        "text": "string",
        "note": "string",
        "day": "datetime",
        "ts": "datetime",
    }
    t = _download(client, h, body["id"]).to_pydict()
    assert t["text"] == ["line one\nline two", 'say "hi"']
    assert t["note"] == ["", None]  # quoted empty string vs missing value
    assert str(t["day"][1]) == "2024-02-29"
    latin = "name,city\nJosé,Zürich\nRenée,Kraków\n".encode("latin-1", errors="replace")
    body = _ok(upload, h, latin, name="latin")
    assert body["version"]["source"]["options"]["encoding"] == "latin-1"
    assert _download(client, h, body["id"]).column("name").to_pylist() == ["José", "Renée"]
    utf16 = "a,b\n1,é\n".encode("utf-16")
    body = _ok(upload, h, utf16, name="utf16")
    assert _download(client, h, body["id"]).column("b").to_pylist() == ["é"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_value_after_the_type_sample_widens_the_type(client, tenants, upload, fmt):
    """A valid file whose column changes type after DuckDB's 20,480-row sniffing sample.

    Numbers for 30,000 rows, then "n/a": the file is fine, so the column becomes text
    (types re-read from the whole file) instead of the upload failing on line 30,002.
    """
    h = tenants.a.headers("developer")
    n = 30_000
    if fmt == "csv":
        content = b"id,qty\n" + b"".join(b"%d,%d\n" % (i, i % 7) for i in range(n))
        content += b"30000,n/a\n30001,2.5\n"
    else:
        lines = [json.dumps({"id": i, "qty": i % 7}) for i in range(n)]
        lines += [json.dumps({"id": n, "qty": "n/a"}), json.dumps({"id": n + 1, "qty": 2.5})]
        content = ("\n".join(lines) + "\n").encode()
    body = _ok(upload, h, content, filename=f"late.{fmt}")
    version = body["version"]
    assert version["row_count"] == n + 2
    assert {c["name"]: c["type"] for c in version["schema"]}["id"] == "integer"
    assert version["source"]["options"]["types_from"] == "whole file"
    qty = _download(client, h, body["id"]).column("qty").to_pylist()
    assert qty[:3] == ["0", "1", "2"]
    assert qty[-2:] == ["n/a", "2.5"]


def test_latin1_bytes_after_the_sample_fall_back_to_latin1(client, tenants, upload):
    h = tenants.a.headers("developer")
    head = b"id,city\n" + b"".join(b"%d,Paris\n" % i for i in range(40_000))
    assert len(head) > 256 * 1024  # past the bytes aiaas sniffs the encoding from
    content = head + "40000,Zürich\n".encode("latin-1")
    body = _ok(upload, h, content, name="late_latin1")
    assert body["version"]["source"]["options"]["encoding"] == "latin-1"
    assert _download(client, h, body["id"]).column("city").to_pylist()[-1] == "Zürich"


def test_wide_table_and_hostile_column_names(client, tenants, upload):
    h = tenants.a.headers("developer")
    n = 600
    header = ",".join(f"c{i}" for i in range(n)).encode()
    row = ",".join(str(i) for i in range(n)).encode()
    body = _ok(upload, h, header + b"\n" + row + b"\n" + row + b"\n", name="wide")
    assert body["version"]["column_count"] == n
    names = ['a"b', "x'); DROP TABLE t; --", "ünï cødé 名前", "select", "sp ace"]
    content = (",".join('"' + c.replace('"', '""') + '"' for c in names) + "\n1,2,3,4,5\n").encode()
    body = _ok(upload, h, content, name="names")
    assert [c["name"] for c in body["version"]["schema"]] == names
    assert _download(client, h, body["id"]).column_names == names
    r = client.post(
        "/api/v1/sql", headers=h, json={"query": 'SELECT "a""b", "ünï cødé 名前" FROM names'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[1, 3]]


def _bomb() -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        block = b"0" * (1 << 20)
        for _ in range(100):
            gz.write(block)
    return out.getvalue()


HOSTILE = {
    "empty": (b"", 422),
    "header_only": (b"a,b,c\n", 422),
    "ragged": (b"a,b\n1,2\n3,4,5\n6\n", 422),
    "binary_junk": (bytes(range(256)) * 40, 415),
    "zip": (b"PK\x03\x04" + b"\x00" * 100, 415),
    "gzip_bomb": (None, 413),
    "corrupt_gzip": (b"\x1f\x8b\x08\x00" + b"garbage" * 10, 422),
    "many_columns": (",".join(f"c{i}" for i in range(100_000)).encode() + b"\n", 422),
    "huge_cell": (b'a,b\n1,"' + b"x" * (10 * 1024 * 1024) + b'"\n', 422),
    "duplicate_columns": (b"a,b,a\n1,2,3\n", 422),
    "duplicate_columns_case": (b"Name,name\n1,2\n", 422),
    "bad_json": (b'{"a": 1}\n{"a": \n', 422),
    "bad_parquet": (b"PAR1" + b"\x00" * 50 + b"PAR1", 422),
    "blank_lines": (b"\n\n\n", 422),
    "empty_header": (b",,,\n,,,\n", 422),
    "json_not_records": (b"[1, 2, 3]", 422),
    "json_mixed_lines": (b'{"a": 1}\n[1]\n', 422),
    "json_case_duplicates": (b'{"id": 1, "ID": 2}\n', 422),
    "json_empty_array": (b"[]\n", 422),
    "json_empty_object": (b"{}", 422),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_rejected_cleanly(client, tenants, upload, settings, case):
    content, status = HOSTILE[case]
    if content is None:
        content = _bomb()
    h = tenants.a.headers("developer")
    filename = "data.jsonl" if case == "bad_json" else "data.csv"
    r = upload(h, content, name=case, filename=filename)
    body = assert_problem(r, status)
    assert body["detail"]
    if case == "ragged":
        assert body["detail"] == "record 3 has 3 fields; the first record has 2"
    assert "Try setting" not in body["detail"]  # no DuckDB options the caller cannot set
    if case.startswith("json_not") or case.startswith("json_mixed"):
        assert body["detail"].startswith("JSON input must be objects")
    if case.startswith("json_empty"):
        assert body["detail"] == "the file has no data rows"
    assert "/" not in body["detail"].replace("N/A", "") or "<" in body["detail"]
    assert client.get("/api/v1/datasets", headers=h).json()["items"] == []
    assert data_files(settings) == []


def test_ingest_process_out_of_memory_is_a_clean_4xx(client, tenants, upload, settings):
    """The upload is parsed in a separate process under RLIMIT_AS; when that process cannot
    get memory, the caller gets a problem body, nothing is stored, and the API carries on."""
    h = tenants.a.headers("developer")
    settings.data.ingest_address_space_bytes = 64 * 1024 * 1024  # too small even to start
    r = upload(h, b"a,b\n1,2\n", name="starved")
    # The child is already past 64 MiB when it applies RLIMIT_AS (Python and DuckDB are
    # loaded): its first allocation raises MemoryError, which it reports as 413.
    body = assert_problem(r, 413, "payload_too_large")
    assert body["detail"] == "converting the file needed more memory than allowed"
    assert client.get("/api/v1/datasets", headers=h).json()["items"] == []
    assert data_files(settings) == []
    settings.data.ingest_address_space_bytes = 4 * 1024**3
    assert upload(h, b"a,b\n1,2\n", name="after").status_code == 201


def test_ingest_process_timeout_is_a_clean_4xx(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    settings.data.ingest_timeout_s = 0.01  # the process is killed before it answers
    body = assert_problem(upload(h, b"a,b\n1,2\n", name="slow"), 422)
    assert "longer than" in body["detail"]
    assert client.get("/api/v1/datasets", headers=h).json()["items"] == []
    assert data_files(settings) == []


def test_ingest_process_file_size_limit(tmp_path):
    """RLIMIT_FSIZE in the ingest process: a write past it fails (EFBIG), it is not killed."""
    from dataclasses import replace

    from aiaas.data.ingest import IngestOptions
    from aiaas.data.ingest_worker import convert_isolated
    from aiaas.data.limits import ingest_isolation, ingest_limits
    from aiaas.errors import PayloadTooLarge
    from aiaas.settings import Settings

    src = tmp_path / "upload"
    with gzip.open(src, "wb") as gz:
        for i in range(20_000):
            gz.write(b"%d,some text that compresses well\n" % i)
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        convert_isolated(
            src,
            tmp_path,
            filename="x.csv.gz",
            options=IngestOptions(),
            limits=ingest_limits(Settings()),
            isolation=replace(ingest_isolation(Settings()), timeout_s=60, max_file_bytes=100_000),
        )
    converted = convert_isolated(
        src,
        tmp_path,
        filename="x.csv.gz",
        options=IngestOptions(header=False),
        limits=ingest_limits(Settings()),
        isolation=replace(ingest_isolation(Settings()), timeout_s=60),
    )
    assert converted.result.row_count == 20_000
    assert converted.peak_rss > 0


def test_names_differing_only_in_case_are_refused_in_every_format(client, tenants, upload):
    """DuckDB would quietly rename the second one ("A" → "A_1"); CSV already refuses it."""
    h = tenants.a.headers("developer")
    buf = io.BytesIO()
    pq.write_table(pa.table({"Price": [1], "price": [2]}), buf)
    body = assert_problem(upload(h, buf.getvalue(), filename="p.parquet"), 422)
    assert "duplicate column name" in body["detail"]
    # the second spelling first appears past the 256 KiB sample aiaas reads itself, but
    # inside the 20,480 records DuckDB samples
    lines = [b'{"k": %d, "pad": "%s"}' % (i, b"p" * 24) for i in range(15_000)]
    content = b"\n".join([*lines, b'{"K": 1}']) + b"\n"
    assert content.index(b'"K"') > 256 * 1024
    body = assert_problem(upload(h, content, filename="late.jsonl"), 422)
    assert body["detail"].startswith("duplicate column name 'K' (also 'k'; names that differ")
    # a real column named like DuckDB's suffix is fine
    ok = _ok(upload, h, b'{"x": 1, "x_1": 2}\n{"x": 3, "x_1": 4}\n', filename="s.jsonl")
    assert [c["name"] for c in ok["version"]["schema"]] == ["x", "x_1"]


def test_cell_limit_applies_to_parquet_too(client, tenants, upload, settings):
    settings.data.max_cell_bytes = 1000
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": ["y" * 5000]}), buf)
    h = tenants.a.headers("developer")
    assert_problem(upload(h, buf.getvalue(), filename="x.parquet"), 422)
    assert data_files(settings) == []


def test_upload_limits(client, tenants, upload, settings):
    h = tenants.a.headers("developer")
    settings.limits.max_upload_bytes = 10_000  # our own streamed count, below the middleware's
    r = upload(h, b"a\n" + b"1\n" * 20_000)
    assert r.status_code == 413
    assert data_files(settings) == []
    r = client.post(
        "/api/v1/datasets",
        headers=h,
        content=b"a,b\n1,2\n",
        params={},
    )
    body = assert_problem(r, 415, "unsupported_media_type")
    assert body["detail"] == "this route takes multipart/form-data, not a body without Content-Type"
    r = client.post(
        "/api/v1/datasets", headers=h, files={"other": ("x.csv", b"a\n1\n")}, data={"name": "x"}
    )
    assert_problem(r, 422)
    r = upload(h, b"a\n1\n", name="bad\u202ename")
    assert_problem(r, 422)
    r = upload(h, b"a\n1\n", delimiter=";;")
    assert_problem(r, 422)
    assert data_files(settings) == []


def test_jsonl_mixed_and_nested(client, tenants, upload):
    h = tenants.a.headers("developer")
    lines = [{"a": 1, "b": {"c": [1, 2]}}, {"a": "text", "b": None}, {"a": 2.5}]
    content = b"\n".join(json.dumps(x).encode() for x in lines) + b"\n"
    body = _ok(upload, h, content, filename="m.jsonl")
    t = _download(client, h, body["id"]).to_pydict()
    assert t["a"] == ["1", "text", "2.5"]
    assert json.loads(t["b"][0]) == {"c": [1, 2]}


def test_parquet_row_bomb_refused_from_footer(client, tenants, upload, settings):
    settings.data.max_rows = 1000
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array([7] * 5000)}), buf, use_dictionary=True)
    assert_problem(
        upload(tenants.a.headers("developer"), buf.getvalue(), filename="b.parquet"), 413
    )
    assert data_files(settings) == []


def test_deeply_nested_json_refused(client, tenants, upload, settings):
    deep = "[" * 100_000 + "]" * 100_000
    for content in (('{"a": ' + deep + "}\n").encode(), deep.encode()):
        r = upload(tenants.a.headers("developer"), content, filename="d.jsonl")
        body = assert_problem(r, 422)
        assert "could not be converted" not in body["detail"]  # refused, not a crash
    assert data_files(settings) == []


def test_sweep_scratch(settings):
    import os

    from aiaas.data.scratch import sweep_scratch

    old = settings.data_dir / "tmp" / "ingest" / "dead"
    old.mkdir(parents=True)
    (old / "upload").write_bytes(b"x")
    os.utime(old, (0, 0))
    fresh = settings.data_dir / "tmp" / "ingest" / "live"
    fresh.mkdir()
    assert sweep_scratch(settings) == 1
    assert not old.exists()
    assert fresh.exists()


def test_ingest_slots_bound_concurrency(settings):
    import threading

    from aiaas.data.gates import DataGates
    from aiaas.errors import TooManyRequests

    settings.data.max_concurrent_ingests = 1
    settings.data.ingest_queue_timeout_s = 0.2
    gates = DataGates.from_settings(settings.data)
    entered, release = threading.Event(), threading.Event()

    def work(org_id, block):
        with gates.ingest_slot(org_id):
            if block:
                entered.set()
                release.wait(5)
            return "done"

    holder = threading.Thread(target=work, args=("org-a", True))
    holder.start()
    assert entered.wait(5)
    with pytest.raises(TooManyRequests):
        work("org-b", False)  # the global cap holds for every organization
    release.set()
    holder.join(5)
    assert work("org-b", False) == "done"


def test_child_processes_get_none_of_the_api_secrets(monkeypatch):
    from aiaas.sandbox.runner import child_command, child_env

    monkeypatch.setenv("AIAAS_AUTH__SECRET_KEY", "canary-secret-key")
    monkeypatch.setenv("AIAAS_DATABASE_URL", "postgresql://u:canary-pw@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws")
    monkeypatch.setenv("PYTHONPATH", "/tmp/planted")
    env = child_env()
    assert "canary" not in repr(env)
    assert set(env) <= {"PATH", "LANG", "HOME"}
    assert "-I" in child_command("aiaas.data.ingest_worker")  # PYTHON* variables ignored too


def test_ingest_process_reports_an_unexpected_error_instead_of_dying(tmp_path):
    from aiaas.sandbox import ChildLimits, ChildPaths, last_json_line, run_child

    src = tmp_path / "upload"
    src.write_bytes(b"a,b\n1,2\n")
    request = {
        "src": str(src),
        "work_dir": str(tmp_path),
        "filename": "x.csv",
        "options": {"format": "csv", "not_an_option": 1},  # IngestOptions refuses it
        "limits": {},
    }
    limits = ChildLimits(
        timeout_s=60,
        cpu_s=60,
        address_bytes=0,
        max_file_bytes=10**9,
        max_output_bytes=1 << 20,
        open_files=256,
    )
    run = run_child(
        "aiaas.data.ingest_worker", request, limits, ChildPaths(cwd=tmp_path, write=(tmp_path,))
    )
    assert (run.returncode, run.timed_out, run.overflow) == (0, False, False)
    reply = last_json_line(run.output)
    assert reply is not None
    assert reply["ok"] is False
    assert reply["internal"] is True
    assert reply["error"] == "InvalidInput"
    assert "TypeError" in run.stderr  # the traceback goes to the parent's log


HOSTILE_CHILD = r"""
import json, os, sys
request = json.loads(sys.stdin.read())["request"]  # the sandbox's envelope
work, mode = request["work_dir"], sys.argv[1]
ok = {"ok": True, "result": {"parquet_path": "/etc/passwd", "row_count": 1,
      "columns": [["a", "BIGINT"]], "source_format": "csv", "compression": None,
      "detected": {"delimiter": ",", "evil": "x" * 10_000, "quote": "q" * 10_000}}}
target = sys.argv[2]
if mode == "symlink":
    os.symlink(target, os.path.join(work, "data.parquet"))
elif mode == "hardlink":
    os.link(target, os.path.join(work, "data.parquet"))
elif mode == "flood":  # a valid answer, but only after 50 MiB: the parent must not read it all
    with open(os.path.join(work, "data.parquet"), "wb") as f:
        f.write(b"PAR1")
    sys.stdout.write("x" * (50 * 1024 * 1024) + "\n")
elif mode == "forbidden":
    ok = {"ok": False, "error": "Forbidden", "message": "m" * 100_000}
elif mode == "honest":
    with open(os.path.join(work, "data.parquet"), "wb") as f:
        f.write(b"PAR1")
print(json.dumps(ok))
"""


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "flood", "forbidden", "honest"])
def test_a_compromised_ingest_process_cannot_hand_back_other_files(tmp_path, monkeypatch, mode):
    """The child has parsed hostile bytes, so its answer is untrusted: the parent accepts only
    the output path it chose, as a fresh regular file, reads a bounded reply, and maps error
    classes through an allow-list."""
    import sys
    from dataclasses import replace

    from aiaas.data import ingest_worker
    from aiaas.data.ingest import IngestOptions
    from aiaas.data.limits import ingest_isolation, ingest_limits
    from aiaas.errors import InvalidInput
    from aiaas.sandbox import runner
    from aiaas.settings import Settings

    script = tmp_path / "hostile_child.py"
    script.write_text(HOSTILE_CHILD)
    secret = tmp_path / "other-org-data.parquet"  # what a link would smuggle into the store
    secret.write_bytes(b"PAR1 someone else's rows")
    work = tmp_path / "work"
    work.mkdir()
    src = work / "upload"
    src.write_bytes(b"a\n1\n")
    monkeypatch.setattr(
        runner,
        "child_command",
        lambda _module: [sys.executable, str(script), mode, str(secret)],
    )

    def run() -> ingest_worker.Converted:
        return ingest_worker.convert_isolated(
            src,
            work,
            filename="a.csv",
            options=IngestOptions(),
            limits=ingest_limits(Settings()),
            isolation=replace(ingest_isolation(Settings()), timeout_s=60),
        )

    if mode == "honest":  # the reply's own path and extra fields are ignored
        converted = run()
        assert converted.result.parquet_path == work / "data.parquet"
        assert converted.result.detected == {"delimiter": ","}
        return
    with pytest.raises(InvalidInput) as raised:
        run()
    assert len(raised.value.detail) <= 2000
    assert "someone else" not in raised.value.detail
