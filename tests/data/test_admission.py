"""Fair admission to the ingest slots: one organization cannot starve the others.

The gate (``data.gates.FairGate``) is tested with real threads; the whole path with real
uploads whose ingest processes are frozen (SIGSTOP) while they hold their slots.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiaas.api.state import app_state
from aiaas.data.gates import FairGate

CSV = b"id,text\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(20_000))


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


class _Holder(threading.Thread):
    """Acquires a slot of ``gate`` for ``key``, notes its turn, holds until released."""

    def __init__(self, gate: FairGate, key: str, name: str, order: list[str]) -> None:
        super().__init__(name=name, daemon=True)
        self.gate, self.key, self.order = gate, key, order
        self.admitted = threading.Event()
        self.release = threading.Event()
        self.ok: bool | None = None

    def run(self) -> None:
        self.ok = self.gate.acquire(self.key, timeout=30)
        if self.ok:
            self.order.append(self.name)
            self.admitted.set()
            self.release.wait(30)
            self.gate.release(self.key)


def test_gate_caps_the_total_and_each_key():
    gate = FairGate(total=3, per_key=2)
    assert gate.acquire("a", 1)
    assert gate.acquire("a", 1)
    started = time.monotonic()
    assert not gate.acquire("a", 0.2)  # a third for "a": waits, then gives up
    assert time.monotonic() - started >= 0.2
    assert gate.acquire("b", 0)  # another key gets the free slot at once
    assert not gate.acquire("c", 0.1)  # all three taken
    assert gate.snapshot() == {"running": {"a": 2, "b": 1}, "waiting": {}}
    gate.release("a")
    assert gate.acquire("c", 0)
    with pytest.raises(RuntimeError):
        gate.release("nobody")


def test_gate_admits_waiters_round_robin_across_keys():
    gate = FairGate(total=1, per_key=1)
    order: list[str] = []
    first = _Holder(gate, "A", "a1", order)
    first.start()
    assert first.admitted.wait(5)
    waiters = []
    for name in ("a2", "a3", "b1", "c1", "b2"):  # arrival order
        holder = _Holder(gate, name[0].upper(), name, order)
        holder.start()
        waiters.append(holder)
        count = len(waiters)
        _wait_for(lambda: sum(gate.snapshot()["waiting"].values()) == count)  # noqa: B023
    first.release.set()
    for holder in waiters:  # each one releases as soon as it is in
        holder.release.set()
    for holder in waiters:
        holder.join(10)
    # A's second and third request never go before B's and C's first ones
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert gate.snapshot() == {"running": {}, "waiting": {}}


def test_gate_a_key_at_its_cap_never_blocks_another_key():
    gate = FairGate(total=2, per_key=1)
    order: list[str] = []
    hog = _Holder(gate, "A", "a1", order)
    hog.start()
    assert hog.admitted.wait(5)
    queued = _Holder(gate, "A", "a2", order)
    queued.start()
    _wait_for(lambda: gate.snapshot()["waiting"] == {"A": 1})
    started = time.monotonic()
    assert gate.acquire("B", timeout=5)
    assert time.monotonic() - started < 0.5
    assert gate.snapshot() == {"running": {"A": 1, "B": 1}, "waiting": {"A": 1}}
    gate.release("B")
    assert not queued.admitted.wait(0.3)  # the free slot is not A's: it is at its cap
    hog.release.set()
    assert queued.admitted.wait(5)
    queued.release.set()
    queued.join(5)


def test_gate_a_timed_out_waiter_leaves_no_trace():
    gate = FairGate(total=1, per_key=1)
    assert gate.acquire("A", 0)
    assert not gate.acquire("B", 0.05)
    assert gate.snapshot() == {"running": {"A": 1}, "waiting": {}}
    gate.release("A")
    assert gate.acquire("B", 0)


def test_per_org_slots_setting_defaults_below_the_total_and_is_validated():
    from pydantic import ValidationError

    from aiaas.settings import DataSettings

    assert DataSettings().ingest_slots_per_org == 1  # 2 slots: one is kept for the others
    assert DataSettings(max_concurrent_ingests=4).ingest_slots_per_org == 3
    assert DataSettings(max_concurrent_ingests=1).ingest_slots_per_org == 1
    settings = DataSettings(max_concurrent_ingests=4, max_concurrent_ingests_per_org=2)
    assert settings.ingest_slots_per_org == 2
    with pytest.raises(ValidationError, match="must not exceed"):
        DataSettings(max_concurrent_ingests=2, max_concurrent_ingests_per_org=3)


# --------------------------------------------------------------------------- over HTTP


def _ingest_children() -> list[int]:
    """This process's ingest processes (children running aiaas.data.ingest_worker)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"aiaas.data.ingest_worker" in cmdline:
            found.append(int(entry.name))
    return found


class _Freezer(threading.Thread):
    """SIGSTOPs every ingest process this test process starts, until ``stop`` is set: an
    upload whose conversion never ends, holding its slot (SIGCONT lets it finish)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.frozen: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in _ingest_children():
                if pid not in self.frozen:
                    os.kill(pid, signal.SIGSTOP)
                    self.frozen.append(pid)
            time.sleep(0.002)

    def thaw(self) -> None:
        self.stop.set()
        self.join(5)
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_one_org_holding_its_slot_does_not_queue_another_orgs_upload(
    client, tenants, upload, settings
):
    settings.data.ingest_queue_timeout_s = 120  # nobody gives up during the test
    ha, hb = tenants.a.headers("developer"), tenants.b.headers("developer")
    results: dict[str, int] = {}

    def send(headers: dict[str, str], name: str) -> threading.Thread:
        def run() -> None:
            results[name] = upload(headers, CSV, name=name).status_code

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    freezer = _Freezer()
    freezer.start()
    try:
        a1 = send(ha, "a1")  # a large upload of A: its conversion holds a slot (frozen)
        _wait_for(lambda: len(freezer.frozen) == 1, timeout=30)
        a_more = [send(ha, "a2"), send(ha, "a3")]  # A's further uploads
        time.sleep(2)  # time enough for them to start converting, if they were let in
        assert len(freezer.frozen) == 1, "a second upload of A was let in"
        freezer.stop.set()  # B's conversion runs normally
        started = time.monotonic()
        b = send(hb, "b")
        b.join(30)
        assert results.get("b") == 201, results
        assert time.monotonic() - started < 30
        assert all(t.is_alive() for t in a_more)  # still waiting for A's slot
        gate = app_state(client.app).data.gates.ingest
        assert (gate.total, gate.per_key) == (2, 1)
        assert gate.snapshot() == {
            "running": {tenants.a.org_id: 1},
            "waiting": {tenants.a.org_id: 2},
        }
    finally:
        freezer.thaw()
    for thread in (a1, *a_more):
        thread.join(60)
    assert results == {"a1": 201, "a2": 201, "a3": 201, "b": 201}
