"""A hostile child, once, for every user of ``aiaas.sandbox``: flood, hang, a grandchild left
behind, crash, out of memory, CPU spin, links for answers, writes and reads outside its paths.

Driven through the real runner with the real child helper (``aiaas.sandbox.probe``).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from aiaas.sandbox import ChildLimits, ChildPaths, claim_output, landlock, last_json_line, run_child

PROBE = "aiaas.sandbox.probe"


def _limits(**overrides):
    values = {
        "timeout_s": 30.0,
        "cpu_s": 30,
        "address_bytes": 1 << 30,
        "max_file_bytes": 1 << 20,
        "max_output_bytes": 1 << 20,
        "open_files": 64,
    }
    return ChildLimits(**{**values, **overrides})


def _probe(tmp_path, request, *, limits=None, read=(), write=None, **kwargs):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    paths = ChildPaths(cwd=work, read=tuple(read), write=(work,) if write is None else write)
    return run_child(PROBE, request, limits or _limits(), paths, **kwargs)


def test_a_well_behaved_child_answers_and_its_answer_is_parsed(tmp_path):
    run = _probe(tmp_path, {"act": "echo", "value": [1, "two"]})
    assert (run.returncode, run.timed_out, run.overflow, run.signal) == (0, False, False, None)
    reply = last_json_line(run.output)
    assert reply is not None
    assert reply["echo"] == [1, "two"]
    assert reply["abi"] == landlock.abi_version()


def test_the_child_gets_a_scrubbed_environment_and_isolated_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("AIAAS_AUTH__SECRET_KEY", "canary-secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "planted"))
    reply = last_json_line(_probe(tmp_path, {"act": "env"}).output)
    assert reply is not None
    assert set(reply["env"]) <= {"PATH", "LANG", "HOME"}
    assert "canary" not in repr(reply["env"])
    assert str(tmp_path / "planted") not in reply["path"]


def test_a_flood_of_output_is_cut_at_the_bound_and_the_child_killed(tmp_path):
    started = time.monotonic()
    run = _probe(tmp_path, {"act": "flood"}, limits=_limits(max_output_bytes=256 * 1024))
    assert run.overflow is True
    assert run.output == b"" or len(run.output) <= 256 * 1024
    assert run.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 20


def test_a_flood_streamed_to_a_sink_is_bounded_too(tmp_path):
    seen: list[bytes] = []
    run = _probe(
        tmp_path,
        {"act": "flood"},
        limits=_limits(max_output_bytes=300_000),
        on_output=seen.append,
    )
    assert run.overflow is True
    assert sum(map(len, seen)) <= 300_000
    assert run.output == b""


def test_a_sink_that_refuses_the_answer_kills_the_child_and_propagates(tmp_path):
    class Refused(Exception):
        pass

    def refuse(_chunk):
        raise Refused

    with pytest.raises(Refused):
        _probe(tmp_path, {"act": "flood"}, on_output=refuse)


def test_a_hanging_child_is_killed_at_the_timeout(tmp_path):
    started = time.monotonic()
    run = _probe(tmp_path, {"act": "hang"}, limits=_limits(timeout_s=1.0))
    assert run.timed_out is True
    assert run.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_the_timeout_kills_the_whole_process_group(tmp_path):
    run = _probe(tmp_path, {"act": "hang_group"}, limits=_limits(timeout_s=2.0))
    assert run.timed_out is True
    reply = last_json_line(run.output)
    assert reply is not None
    # the child's group (its pid) is gone: the grandchild it forked was killed with it
    deadline = time.monotonic() + 5
    while True:
        try:
            os.killpg(reply["pid"], 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a grandchild outlived the timeout"
        time.sleep(0.05)


def test_a_crash_is_reported_with_its_signal(tmp_path):
    run = _probe(tmp_path, {"act": "crash"})
    assert (run.returncode, run.signal, run.killed_at_limit) == (-signal.SIGSEGV, "SIGSEGV", False)
    assert last_json_line(run.output) is None


def test_out_of_memory_ends_the_child_not_the_parent(tmp_path):
    run = _probe(tmp_path, {"act": "oom"}, limits=_limits(address_bytes=512 << 20))
    assert run.returncode == 1  # MemoryError at RLIMIT_AS: the child dies, nothing answers
    assert "MemoryError" in run.stderr
    assert last_json_line(run.output) is None


def test_cpu_spin_is_stopped_by_the_cpu_limit(tmp_path):
    run = _probe(tmp_path, {"act": "spin"}, limits=_limits(cpu_s=1, timeout_s=30))
    assert run.timed_out is False
    assert run.returncode == -signal.SIGXCPU
    assert run.killed_at_limit is True


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_for_an_answer_is_refused(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    secret = work / "someone-else.parquet" if kind == "hardlink" else tmp_path / "secret"
    secret.write_bytes(b"PAR1 someone else's rows")
    out = work / "data.parquet"
    run = _probe(tmp_path, {"act": kind, "target": str(secret), "link": str(out)})
    assert last_json_line(run.output) == {"ok": True}
    with pytest.raises(ValueError, match="not a file the child wrote"):
        claim_output(out)


def test_claim_output_accepts_a_fresh_regular_file_and_refuses_a_missing_one(tmp_path):
    out = tmp_path / "data.parquet"
    with pytest.raises(ValueError, match="no output"):
        claim_output(out)
    out.write_bytes(b"PAR1")
    assert claim_output(out) == out


def test_file_writes_are_capped_by_size(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    limits = _limits(max_file_bytes=1000)
    run = _probe(tmp_path, {"act": "write", "path": str(work / "x"), "size": 5000}, limits=limits)
    reply = last_json_line(run.output)
    assert reply == {"ok": False, "errno": 27}  # EFBIG, not a kill
    none = _limits(max_file_bytes=0)
    run = _probe(tmp_path, {"act": "write", "path": str(work / "y"), "size": 1}, limits=none)
    assert last_json_line(run.output) == {"ok": False, "errno": 27}


@pytest.mark.skipif(landlock.abi_version() == 0, reason="this kernel has no Landlock")
def test_landlock_allows_exactly_the_paths_given(tmp_path):
    outside = tmp_path / "other-org.parquet"
    outside.write_bytes(b"someone else's rows")
    allowed = tmp_path / "mine.parquet"
    allowed.write_bytes(b"mine")

    def reply(request, **kwargs):
        return last_json_line(_probe(tmp_path, request, **kwargs).output)

    assert reply({"act": "read", "path": str(outside)}) == {"ok": False, "errno": 13}
    assert reply({"act": "read", "path": str(allowed)}, read=(allowed,)) == {"ok": True, "bytes": 4}
    planted = tmp_path / "planted"
    assert reply({"act": "write", "path": str(planted)}) == {"ok": False, "errno": 13}
    assert not planted.exists()
    work_file = tmp_path / "work" / "ok"
    assert reply({"act": "write", "path": str(work_file)}) == {"ok": True}
    assert reply({"act": "write", "path": str(work_file)}, write=()) == {"ok": False, "errno": 13}


def test_setting_cancel_kills_the_child_within_a_fraction_of_a_second(tmp_path):
    import threading

    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    run = _probe(tmp_path, {"act": "hang"}, cancel=cancel)
    assert run.cancelled
    assert not run.timed_out
    assert time.monotonic() - started < 3.0


@pytest.mark.skipif(landlock.abi_version() < 4, reason="this kernel's Landlock has no TCP rules")
def test_landlock_refuses_tcp_connections(tmp_path):
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        run = _probe(tmp_path, {"act": "connect", "host": "127.0.0.1", "port": port})
        assert last_json_line(run.output) == {"ok": False, "errno": 13}
    finally:
        server.close()


def test_a_warm_child_is_used_moves_to_its_cwd_and_is_confined(tmp_path):
    from aiaas.sandbox.runner import spawn

    warm = spawn(PROBE, tmp_path)  # spawned elsewhere, ahead of its request
    work = tmp_path / "work"
    work.mkdir()
    paths = ChildPaths(cwd=work, write=(work,))
    run = run_child(PROBE, {"act": "write", "path": "here.txt"}, _limits(), paths, warm=warm)
    assert last_json_line(run.output) == {"ok": True}
    assert warm.poll() is not None  # it was this process that ran, and it is done
    assert (work / "here.txt").exists()  # relative to the cwd of its envelope
    assert not (tmp_path / "here.txt").exists()
    if landlock.abi_version():
        outside = {"act": "write", "path": str(tmp_path / "x")}
        again = run_child(PROBE, outside, _limits(), paths, warm=spawn(PROBE, tmp_path))
        assert last_json_line(again.output) == {"ok": False, "errno": 13}


def test_a_dead_warm_child_is_replaced_by_a_fresh_one(tmp_path):
    from aiaas.sandbox.runner import spawn

    warm = spawn(PROBE, tmp_path)
    warm.kill()
    warm.wait()
    run = _probe(tmp_path, {"act": "echo", "value": 7}, warm=warm)
    assert last_json_line(run.output)["echo"] == 7  # type: ignore[index]
