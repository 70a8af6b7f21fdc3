"""The server transport that sends a response's head and small body in one write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiaas.api.server import _HOLD_BYTES, CoalescingTransport


class Recorder:
    """The real transport's side: what reached the socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def pause_reading(self) -> None:
        self.paused = True


def _run(
    steps: list[Callable[[CoalescingTransport], object]],
) -> tuple[Recorder, list[list[bytes]]]:
    async def main() -> tuple[Recorder, list[list[bytes]]]:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen = []
        for step in steps:
            step(t)
            seen.append(list(real.writes))
            await asyncio.sleep(0)  # the end of a step of the loop
        seen.append(list(real.writes))
        return real, seen

    return asyncio.run(main())


def _writes(*chunks: bytes, close: bool = False) -> Callable[[CoalescingTransport], None]:
    def step(t: CoalescingTransport) -> None:
        for chunk in chunks:
            t.write(chunk)
        if close:
            t.close()

    return step


def test_writes_of_one_step_leave_as_one_in_order() -> None:
    real, seen = _run([_writes(b"HTTP/1.1 200 OK\r\n\r\n", b"{}")])
    assert seen[0] == []  # held until the step ends
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


def test_writes_of_separate_steps_stay_separate() -> None:
    real, _ = _run([_writes(b"a"), lambda t: t.writelines([b"b", b"c"])])
    assert real.writes == [b"a", b"bc"]


def test_close_sends_what_is_held_first() -> None:
    real, seen = _run([_writes(b"head", b"body", close=True)])
    assert seen[0] == [b"headbody"]
    assert real.closed


def test_a_large_write_is_not_held() -> None:
    big = b"x" * _HOLD_BYTES
    real, seen = _run([_writes(b"head", big, b"tail")])
    assert seen[0] == [b"head" + big]  # sent at once: the transport's flow control applies
    assert real.writes == [b"head" + big, b"tail"]


def test_many_small_writes_without_yielding_do_not_pile_up() -> None:
    chunk = b"y" * 1000
    n = 3 * _HOLD_BYTES // len(chunk)
    real, seen = _run([_writes(*[chunk] * n)])
    assert len(seen[0]) >= 2  # out in the same step, in pieces of at most ~_HOLD_BYTES
    assert max(map(len, seen[0])) < _HOLD_BYTES + len(chunk)
    assert b"".join(real.writes) == chunk * n


def test_nothing_is_sent_to_a_closing_transport_and_the_rest_is_the_real_one() -> None:
    def step(t: CoalescingTransport) -> None:
        t.write(b"late")
        t._transport.closed = True  # type: ignore[attr-defined]  # the client went away
        assert t.get_write_buffer_size() == 4 + 7
        t.pause_reading()  # delegated

    real, _ = _run([step])
    assert real.writes == []
    assert real.paused
