"""The fault proxy's server: a listener thread, and a thread per client connection.

Each client connection keeps its own connection to the upstream alive; a
request is read whole (``Expect: 100-continue`` is answered at once, a
chunked body is de-chunked), then answered, reset or forwarded as
`FaultProxy.decide` says, and the upstream's answer is read whole before it
is written back with a ``Content-Length``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import selectors
import socket
import struct
import threading
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from devenv.faultproxy.plan import (
    ANSWERED_KINDS,
    FaultCounts,
    FaultKind,
    FaultPlan,
    ProxiedRequest,
)
from devenv.faultproxy.protocols import THROTTLING_CODES, error_answer, identify
from devenv.ports import LOOPBACK_HOST

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 65_536
#: How long the proxy waits for its upstream: well past any client's read
#: timeout (30 s) and retries, so that a slow emulator makes the client, not
#: the proxy, give up. kinesis-mock starved of CPU on a 2-core machine (two
#: KCL daemons, five record processors and moto beside it) has answered a
#: PutRecords after more than a minute.
UPSTREAM_TIMEOUT_SECS = 180.0
_ACCEPT_POLL_SECS = 0.1
_STOP_JOIN_SECS = 5.0
#: Headers that describe one hop's connection, never forwarded as they are.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream_url``, injecting faults.

    Use as a context manager, or call `start` and `stop`; `endpoint_url` is
    where clients should go. ``plan`` may be replaced while it runs (a
    request uses the plan of when it arrived).
    """

    def __init__(self, upstream_url: str, plan: FaultPlan | None = None) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"the fault proxy forwards plain HTTP only, got {upstream_url!r}"
            )
        self.upstream_url = upstream_url
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._faults_of_plan = 0
        self._lock = threading.Lock()
        self._counts = FaultCounts()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._connections: dict[threading.Thread, socket.socket] = {}
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        """The URL clients use instead of ``upstream_url``."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        """Fault from now on as ``plan`` says (its generator and count start anew)."""
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._faults_of_plan = 0

    @property
    def counts(self) -> FaultCounts:
        """Return a copy of what the proxy did so far."""
        with self._lock:
            return self._counts.copy()

    def start(self) -> Self:
        """Listen on a free loopback port and serve in background threads.

        Raises RuntimeError if already started, OSError if it cannot listen.
        """
        if self._listener is not None:
            raise RuntimeError("fault proxy already started")
        self._stopping.clear()
        listener = socket.create_server((LOOPBACK_HOST, 0))
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._acceptor.start()
        logger.info(
            "fault proxy %s -> %s (rate %.2f, kinds %s)",
            self.endpoint_url,
            self.upstream_url,
            self._plan.rate,
            ",".join(self._plan.kinds),
        )
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and join the threads; never raise."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_STOP_JOIN_SECS)
        listener.close()
        with self._lock:
            connections = dict(self._connections)
        for sock in connections.values():
            _shutdown(sock)
        for thread in connections:
            thread.join(_STOP_JOIN_SECS)
        logger.info(
            "fault proxy %s stopped: %s", self.endpoint_url, self.counts.summary()
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------
    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_ACCEPT_POLL_SECS):
                    continue
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                thread = threading.Thread(
                    target=self._serve,
                    args=(sock,),
                    name="faultproxy-conn",
                    daemon=True,
                )
                with self._lock:
                    self._connections[thread] = sock
                thread.start()

    def _serve(self, sock: socket.socket) -> None:
        connection = _ClientConnection(self, sock)
        try:
            connection.serve()
        except OSError as exc:
            # The client went away while answered (its own timeout, or its
            # process ended): what a real endpoint sees too.
            logger.debug("fault proxy: client connection closed: %r", exc)
        finally:
            connection.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def decide(self, request: ProxiedRequest) -> tuple[FaultKind | None, float]:
        """Return the fault for ``request`` (None: forward) and a slow delay.

        Counts the request and the fault.
        """
        with self._lock:
            plan = self._plan
            self._counts.requests[request.service] += 1
            self._counts.operations[request.service, request.operation] += 1
            if plan.rate <= 0 or not plan.applies_to(request):
                return None, 0.0
            if plan.max_faults is not None and self._faults_of_plan >= plan.max_faults:
                return None, 0.0
            if self._rng.random() >= plan.rate:
                return None, 0.0
            self._faults_of_plan += 1
            kind = self._rng.choice(plan.kinds)
            self._counts.faults[request.service, kind] += 1
            delay = self._rng.uniform(*plan.slow_secs) if kind is FaultKind.SLOW else 0
            return kind, delay

    def pick(self, choices: tuple[str, ...]) -> str:
        """Return one of ``choices`` from the proxy's generator."""
        with self._lock:
            return self._rng.choice(choices)

    def count_forwarded(self, service: str) -> None:
        with self._lock:
            self._counts.forwarded[service] += 1

    def count_upstream_error(self) -> None:
        with self._lock:
            self._counts.upstream_errors += 1

    def wait(self, secs: float) -> bool:
        """Sleep ``secs`` unless the proxy stops first; return True if it did."""
        return self._stopping.wait(secs)

    def upstream(self) -> http.client.HTTPConnection:
        """Return a new (not yet connected) connection to the upstream."""
        return http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=UPSTREAM_TIMEOUT_SECS
        )


class _Response:
    """An upstream answer, read whole, ready to be written to the client."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def to_bytes(self, method: str, close: bool) -> bytes:
        has_body = (
            method != "HEAD" and self.status >= 200 and self.status not in (204, 304)
        )
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        for name, value in self.headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP and not (
                lowered == "content-length" and not has_body
            ):
                continue
            lines.append(f"{name}: {value}")
        if has_body:
            lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + (self.body if has_body else b"")


class _ClientConnection:
    """One client connection: reads requests in turn, answers or faults each."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self._upstream: http.client.HTTPConnection | None = None

    def serve(self) -> None:
        while True:
            try:
                request = self._read_request()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                logger.debug("fault proxy: dropping a client connection: %r", exc)
                return
            if request is None or not self._handle(request):
                return

    def close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        self.rfile.close()
        self.sock.close()

    def _read_request(self) -> ProxiedRequest | None:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if not line:
            return None
        if len(line) > MAX_LINE_BYTES:
            raise ValueError("request line too long")
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        message = http.client.parse_headers(self.rfile)
        headers = list(message.items())
        if message.get("Expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in message.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            body = self._read_exactly(int(message.get("Content-Length") or 0))
        service, operation = identify(method, target, message)
        return ProxiedRequest(method, target, headers, body, service, operation)

    def _read_exactly(self, size: int) -> bytes:
        body = self.rfile.read(size) if size else b""
        if len(body) != size:
            raise ValueError(f"request body cut short: {len(body)} of {size} bytes")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline(MAX_LINE_BYTES)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self._read_exactly(size))
            self.rfile.readline(MAX_LINE_BYTES)

    def _handle(self, request: ProxiedRequest) -> bool:
        """Serve one request; return whether the connection stays open."""
        kind, delay_secs = self.proxy.decide(request)
        keep_open = not request.wants_close
        if kind in ANSWERED_KINDS:
            assert kind is not None
            answer = error_answer(
                request.service, kind, self.proxy.pick(THROTTLING_CODES)
            )
            response = _Response(*answer)
            logger.debug(
                "fault proxy: %s %s answered %d",
                request.service,
                request.operation,
                response.status,
            )
            self.sock.sendall(response.to_bytes(request.method, not keep_open))
            return keep_open
        if kind is FaultKind.RESET:
            logger.debug("fault proxy: %s %s reset", request.service, request.operation)
            self._reset()
            return False
        if kind is FaultKind.SLOW and self.proxy.wait(delay_secs):
            return False
        try:
            response = self._forward(request)
        except (OSError, http.client.HTTPException) as exc:
            logger.warning(
                "fault proxy: upstream failed %s %s: %r",
                request.service,
                request.operation,
                exc,
            )
            self.proxy.count_upstream_error()
            bad_gateway = _Response(502, "Bad Gateway", [], b"")
            self.sock.sendall(bad_gateway.to_bytes(request.method, True))
            return False
        self.proxy.count_forwarded(request.service)
        if kind is FaultKind.LOST_RESPONSE:
            logger.debug(
                "fault proxy: %s %s applied, answer %d dropped",
                request.service,
                request.operation,
                response.status,
            )
            self._reset()
            return False
        self.sock.sendall(response.to_bytes(request.method, not keep_open))
        return keep_open

    def _forward(self, request: ProxiedRequest) -> _Response:
        """Send ``request`` upstream and return its whole answer.

        A kept-alive upstream connection the upstream closed while idle fails
        before anything is sent or answered; the request is then sent once
        more on a new connection.
        """
        while True:
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = self.proxy.upstream()
            upstream = self._upstream
            try:
                upstream.putrequest(
                    request.method,
                    request.target,
                    skip_host=True,
                    skip_accept_encoding=True,
                )
                for name, value in request.headers:
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                if request.body or request.method in ("POST", "PUT", "PATCH"):
                    upstream.putheader("Content-Length", str(len(request.body)))
                upstream.endheaders(request.body or None)
                answer = upstream.getresponse()
                body = answer.read()
            except (
                BrokenPipeError,
                ConnectionResetError,
                http.client.RemoteDisconnected,
            ):
                upstream.close()
                self._upstream = None
                if reused:
                    continue
                raise
            except BaseException:
                upstream.close()
                self._upstream = None
                raise
            if answer.will_close:
                upstream.close()
                self._upstream = None
            return _Response(answer.status, answer.reason, answer.getheaders(), body)

    def _reset(self) -> None:
        """Close the client connection with a TCP reset (RST), not a FIN."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.sock.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
