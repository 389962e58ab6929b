"""The HTTP side: a bounded threading server (webhooks and the ops server), the request
handler under its limits, the webhook handler, and body framing."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import orjson

from ctrail.runtime.http.limits import ClientLimits

if TYPE_CHECKING:
    from ctrail.runtime.http.config import ServerConfig
    from ctrail.runtime.http.listener import HttpListener

log = logging.getLogger(__name__)
Refusal = tuple[int, str]


class BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


CONTENT_LENGTH: Final = re.compile(r"[0-9]{1,19}")
# RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, chunk-size = 1*HEXDIG, BWS only before the
# extensions. No sign, no 0x, no spaces around the size, no underscores (int() takes them all).
CHUNK_LINE: Final = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[^\r\n]*)?\r\n")
MAX_REQUEST_LINE_BYTES: Final = 8192


def framing_error(headers: Message, limit: int) -> Refusal | None:
    """What is wrong with how the body is framed, judged from the headers alone (RFC 9112 6:
    one framing, stated once; anything else is a request smuggling attempt or a broken
    sender, and is refused with 400)."""
    if headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return 415, "Content-Encoding is not supported"
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        if len(encodings) > 1 or encodings[0].strip().lower() != "chunked" or lengths:
            return 400, "only a plain chunked Transfer-Encoding, without Content-Length"
        return None
    if not lengths:
        return 411, "Content-Length required"
    if len(lengths) > 1:
        return 400, "more than one Content-Length"
    if not CONTENT_LENGTH.fullmatch(lengths[0].strip(" \t")):
        return 400, "bad Content-Length"
    return (413, "body too large") if int(lengths[0]) > limit else None


def read_chunked(rfile: BinaryIO | BufferedIOBase, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = rfile.readline(1024)
        matched = CHUNK_LINE.fullmatch(line)
        if matched is None:
            raise BadBody(400, "bad chunk size")
        digits = matched.group(1).lstrip(b"0")
        if len(digits) > 16 or len(body) + int(digits or b"0", 16) > limit:
            raise BadBody(413, "body too large")
        size = int(digits or b"0", 16)
        if size == 0:
            break
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.read(2) != b"\r\n":
            raise BadBody(400, "truncated chunk")
        body += chunk
    for _ in range(100):                     # trailers: read and ignored
        if rfile.readline(8192) in (b"\r\n", b"\n", b""):
            return bytes(body)
    raise BadBody(400, "too many trailers")


class BoundedHandler(BaseHTTPRequestHandler):
    """A request under its Server's deadlines and limits: the headers must arrive within
    header_timeout_secs of the first byte (or of the last answer, on a kept-alive connection),
    the whole request within request_timeout_secs; a request line over 8 KiB, a client over
    its request rate, and headers over the budget are refused before anything else is read.
    Subclasses answer with `refuse` and `send`."""

    protocol_version = "HTTP/1.1"                # keep-alive: senders post batch after batch
    server: Server
    raw_requestline: bytes                       # set by the stdlib before parse_request

    def setup(self) -> None:
        super().setup()
        # Per read or write: a stalled client frees its thread (the deadlines bound the rest).
        self.connection.settimeout(self.server.config.read_timeout_secs)

    def handle_one_request(self) -> None:
        self._started = time.monotonic()
        self.server.arm(self.connection, self.server.config.header_timeout_secs)
        try:
            super().handle_one_request()
        finally:
            self.server.disarm(self.connection)

    def parse_request(self) -> bool:
        config = self.server.config
        if len(self.raw_requestline) > MAX_REQUEST_LINE_BYTES:
            return self._refuse_unread(414, "request line too long")
        wait = self.server.limits.request(self.client_address[0])
        if wait:                                  # before any more of the request is read
            return self._refuse_unread(429, "too many requests from this client", wait)
        rfile = self.rfile
        self.rfile = HeaderBudget(rfile, config.max_header_bytes - len(self.raw_requestline),
                                  config.max_headers)   # type: ignore[assignment]
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = rfile
        if parsed and self.request_version == "HTTP/0.9":
            # A request line of two words: the stdlib serves it as HTTP/0.9 (with headers
            # parsed all the same), answering a bare body without a status. Nothing we serve
            # speaks it: its error page, and the connection closed.
            self.send_error(505, "HTTP/0.9 is not served")
            return False
        if parsed:
            self.server.arm(self.connection, config.request_timeout_secs -
                            (time.monotonic() - self._started))
        return parsed

    def refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Answer `status` and close the connection (what is left of the request is unread)."""
        raise NotImplementedError

    def _refuse_unread(self, status: int, message: str, retry_after: int | None = None
                       ) -> bool:
        """Answer before the request line is parsed (the stdlib's attributes are unset)."""
        self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
        self.refuse(status, message, retry_after)
        return False

    def send(self, status: int, content_type: str, payload: bytes,
             headers: dict[str, str] | None = None, close: bool = False) -> None:
        """One whole answer; with `close`, the connection ends after it (lingering so that
        an unread body does not reset the connection before the answer is read)."""
        try:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True         # the client left; nothing more to tell it
            return
        if close:
            self._linger()

    def _linger(self) -> None:
        """Stop sending, then discard what the client still sends for a moment: closing
        with its unread body would reset the connection, destroying the answer unread."""
        until = time.monotonic() + 1.0
        try:
            socket.socket.shutdown(self.connection, socket.SHUT_WR)
            while (left := until - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    return
        except OSError:
            pass

    def peer_certificate(self) -> dict[str, Any] | None:
        conn = self.connection
        return conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None

    def log_message(self, format: str, *args: object) -> None:
        """Silenced: request lines would go to stderr, unstructured (and probes every few
        seconds would flood it)."""


def handler_class(listener: HttpListener) -> type[BoundedHandler]:
    config = listener.config

    class Handler(BoundedHandler):
        def handle_expect_100(self) -> bool:
            if (refusal := self._refusal()) is not None:
                self._answer(*refusal, close=True)
                return False
            return super().handle_expect_100()

        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            if (refusal := self._refusal()) is not None:
                return self._answer(*refusal, close=True)    # body unread: drop the connection
            try:
                body = self._read_body()
            except BadBody as exc:
                return self._answer(exc.status, exc.message, close=True)
            self.server.disarm(self.connection)  # waiting for the bus is not the client's fault
            status, message, request_id = listener.submit(body)
            self._answer(status, message, request_id)

        def _not_allowed(self) -> None:
            self._answer(405, "only POST is accepted", close=True)

        do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed  # noqa: N815

        def _refusal(self) -> Refusal | None:
            return listener.refusal(self.headers.get("Authorization"), self.peer_certificate(),
                                    self.headers)

        def _read_body(self) -> bytes:
            if self.headers.get("Content-Length") is None:
                return read_chunked(self.rfile, config.max_body_bytes)
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length)
            if len(body) < length:
                raise BadBody(400, "body shorter than Content-Length")
            return body

        def refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
            self._answer(status, message, close=True, retry_after=retry_after)

        def _answer(self, status: int, message: str, request_id: str | None = None,
                    close: bool = False, retry_after: int | None = None) -> None:
            listener.count(status)
            payload = orjson.dumps({"status": status, "message": message,
                                    **({"request_id": request_id} if request_id else {})})
            headers = {}
            if status in (429, 503):
                headers["Retry-After"] = str(retry_after or config.retry_after_secs)
            if status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="ContainerTrail"'
            if status == 405:
                headers["Allow"] = "POST"
            if request_id is not None:
                headers["X-Request-Id"] = request_id
            self.send(status, "application/json", payload, headers, close)

    return Handler


class HeaderBudget:
    """The request's reader while its headers are parsed: more than `budget` bytes or
    `max_lines` fields end the request with 431 (the stdlib alone allows 100 lines of 64 KiB)."""

    def __init__(self, rfile: BinaryIO | BufferedIOBase, budget: int, max_lines: int) -> None:
        self._rfile, self._budget, self._lines = rfile, budget, max_lines + 1   # + the blank

    def readline(self, limit: int = -1) -> bytes:
        if self._lines <= 0:
            raise http.client.HTTPException("too many header fields")
        self._lines -= 1
        wanted = self._budget + 1 if limit < 0 else min(limit, self._budget + 1)
        line = self._rfile.readline(wanted)
        self._budget -= len(line)
        if self._budget < 0:
            raise http.client.LineTooLong("header section")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A thread per connection, at most max_connections and max_connections_per_client; a
    watchdog shuts connections whose headers outlive header_timeout_secs or whose request
    outlives request_timeout_secs (a slow-loris client holds a thread only that long)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128                     # listen backlog: a burst of senders connects

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler],
                 config: ServerConfig, tls: ssl.SSLContext | None, name: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config, self.tls = config, tls
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self.limits = ClientLimits(config.max_connections_per_client,
                                   config.max_requests_per_client_per_sec,
                                   config.max_request_burst_per_client)
        self._deadlines: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.limits.connect(client_address[0]):
            return self._refuse(request, b"429 Too Many Requests")
        if not self._slots.acquire(blocking=False):
            self.limits.disconnect(client_address[0])
            return self._refuse(request, b"503 Service Unavailable")
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self.limits.disconnect(client_address[0])
            raise

    def _refuse(self, request: Any, status: bytes) -> None:
        """Answered from the accept loop, without a thread; over TLS just closed, since
        answering would take the handshake that is the work being refused."""
        if self.tls is None:
            _send_quietly(request, b"HTTP/1.1 %s\r\nRetry-After: %d\r\nContent-Length: 0\r\n"
                          b"Connection: close\r\n\r\n" % (status, self.config.retry_after_secs))
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self.limits.disconnect(client_address[0])

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(self.config.read_timeout_secs)
        conn = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        self.arm(conn, self.config.header_timeout_secs)
        try:
            conn.do_handshake()
        except OSError as exc:                   # includes ssl.SSLError: no or a bad client cert
            log.debug("Refused a TLS handshake.", extra={"reason": type(exc).__name__})
            conn.close()
            return
        finally:
            self.disarm(conn)
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A broken connection is the client's problem; the listener serves on, quietly.
        log.debug("An HTTP connection failed.", exc_info=True)

    def arm(self, conn: socket.socket, secs: float) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + secs

    def disarm(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def _watch(self) -> None:
        while not self._closed.wait(0.2):
            now = time.monotonic()
            with self._lock:                     # held while shutting: no fd reuse race
                for conn in [c for c, deadline in self._deadlines.items() if deadline < now]:
                    del self._deadlines[conn]
                    try:                          # the base method: on TLS too, on the fd
                        socket.socket.shutdown(conn, socket.SHUT_RDWR)
                    except OSError:
                        pass


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.setblocking(False)                  # never stall the accept loop
        sock.send(data)
    except OSError:
        pass
