"""The HTTP/1.1 protocol `aiaas serve` runs: uvicorn's httptools protocol with header limits.

uvicorn's httptools protocol reads request headers without a size limit and waits for them
without a deadline, so one client can make a worker buffer a 32 MiB header or hold a
connection open for minutes by sending a byte at a time (slowloris). This subclass adds,
per request:

- ``max_header_bytes``: the request line plus headers; past it the client gets 431 and the
  connection is closed before another byte is buffered;
- ``header_timeout_s``: the time from the first byte of a request (or the connection) to the
  end of its headers; past it the client gets 408 and the connection is closed.

The body has its own idle deadline, enforced per read in the platform middleware. The limits
come from the settings (``AIAAS_LIMITS__*``), read in each worker process.

Its transport (:class:`CoalescingTransport`) sends a response's head and a small body in one
write: one system call and one TCP segment where uvicorn makes two.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aiaas.api.problems import problem_body
from aiaas.settings import get_settings

#: Held writes are sent at once from this many bytes (a segment's worth many times over).
_HOLD_BYTES = 64 * 1024
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = get_settings().limits
        self.max_header_bytes = limits.max_header_bytes
        self.header_timeout_s = limits.header_timeout_s
        self._header_bytes = 0
        self._in_headers = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- deadline for the headers ----------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._refuse(
                408, f"the request headers did not arrive within {self.header_timeout_s:g} s"
            )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- size of the headers ---------------------------------------------------------------
    # Counted on the raw bytes before the parser sees them: httptools assembles a header in
    # its own buffer and hands it over only when complete, so a callback would count too late.
    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_response_complete(self) -> None:
        self._in_headers, self._header_bytes = True, 0
        super().on_response_complete()
        # The keep-alive timer now guards the idle connection; the next request's first
        # byte re-arms the header deadline (on_message_begin).

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_headers:
            super().data_received(data)
            return
        room = self.max_header_bytes - self._header_bytes
        head, rest = (data, b"") if len(data) <= room else (data[:room], data[room:])
        self._header_bytes += len(head)
        super().data_received(head)
        if not rest or self._refused or self.transport.is_closing():
            return
        if self._in_headers:  # the allowance is used up and the headers have not ended
            self._refuse(431, f"the request headers exceed {self.max_header_bytes} bytes")
            return
        super().data_received(rest)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def _refuse(self, status: int, detail: str) -> None:
        self._refused = True
        self._disarm()
        title = _REASONS[status].decode()
        code = "request_timeout" if status == 408 else "headers_too_large"
        body = problem_body(status, title, detail, code=code)
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


class CoalescingTransport:
    """A transport whose writes within one step of the event loop leave as one.

    uvicorn writes a response's status line and headers, then its body: two system calls
    and two TCP segments for every small answer (a prediction), each waking the client.
    Here the first write of a step is held and sent, joined with whatever followed it,
    once the step ends (``call_soon``) or before the connection closes. Everything else
    is the real transport's.
    """

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._held_bytes = len(data)
            self._loop.call_soon(self._flush)
        else:
            self._held.append(data)
            self._held_bytes += len(data)
        if self._held_bytes >= _HOLD_BYTES:  # out now, under the transport's flow control:
            self._flush()  # a stream that never yields to the loop must not pile up here

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        held, self._held, self._held_bytes = self._held, None, 0
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
