"""The sandbox's HTTP server: stdlib ``ThreadingHTTPServer``, fault injection, control endpoints.

Faults are applied here, around the API logic of ``api.py``, because they are transport-level
events: a dropped connection must close the socket without writing a single byte, so that a
client sees exactly what it would see when a load balancer or the network loses a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from voucher_distributor.models.certiverse import PartnerVoucherModel, PartnerVoucherPurchaseModel
from voucher_distributor_cli.sandbox.api import (
    API_PREFIX,
    ApiRequest,
    ApiResponse,
    handle_api,
    problem,
    validation_problem,
)
from voucher_distributor_cli.sandbox.catalog import Catalog, load_catalog
from voucher_distributor_cli.sandbox.config import FaultSettings, SandboxConfig
from voucher_distributor_cli.sandbox.store import RequestRecord, SandboxStore

_log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sandbox"
MAX_BODY_BYTES = 1_000_000
#: Idle keep-alive connections are closed after this long.
IDLE_TIMEOUT_S = 30.0
_HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

#: The fault kind that closes the connection without answering.
DROP = "drop"


def _fault_answer(kind: str, retry_after_s: int) -> ApiResponse:
    """The answer of an injected fault (other than a drop)."""
    detail = "Injected by the Certiverse sandbox."
    if kind == "429":
        return problem(
            429, "Too Many Requests", detail, headers={"Retry-After": str(retry_after_s)}
        )
    if kind == "503":
        return problem(
            503, "Service Unavailable", detail, headers={"Retry-After": str(retry_after_s)}
        )
    return problem(500, "Internal Server Error", detail)


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can end idle keep-alive ones too."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        """Clients hanging up mid-answer are routine under fault injection; stay quiet."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        _log.exception("sandbox: unexpected error serving %s", client_address)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CertiverseSandbox/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    # Headers and body leave in separate writes; without TCP_NODELAY, Nagle plus delayed ACKs
    # would add ~40 ms to every kept-alive request.
    disable_nagle_algorithm = True
    server: _HTTPServer

    # http.server logs through these; the sandbox writes its own line per request instead.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: ARG002
        return

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002
        return

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        started = time.perf_counter()
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        path = split.path
        status: int | None
        body = self._read_body()
        if isinstance(body, ApiResponse):
            status = self._send(body)
        elif path.casefold() == API_PREFIX or path.casefold().startswith(API_PREFIX + "/"):
            query = parse_qsl(split.query, keep_blank_values=True)
            first: dict[str, str] = {}
            for name, value in query:
                first.setdefault(name, value)
            entry = sandbox.store.log_arrival(self.command, path, first)
            response = self._serve_api(sandbox.store, sandbox.config, path, query, body)
            status = None if response is None else response.status
            # Completed before answering: a client that has its answer can rely on the log.
            sandbox.store.log_answer(entry, status)
            if response is None:
                self._drop()
            else:
                self._send(response)
        elif path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            status = self._send(self._serve_control(sandbox, path, body))
        else:
            status = self._send(problem(404, "Not Found", f"Nothing is served at {path}."))
        sandbox.log_line(self.client_address[0], self.command, path, status, started)

    # Every method is served alike (http.server calls do_<METHOD>).
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _read_body(self) -> bytes | ApiResponse:
        """Read the whole body first, so a later drop closes cleanly instead of resetting."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").casefold():
            self.close_connection = True
            return problem(411, "Length Required", "Send a Content-Length; chunked is not read.")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        if not raw_length.strip().isdigit():
            self.close_connection = True
            return validation_problem({"Content-Length": ["Not a valid length."]})
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return problem(413, "Content Too Large", f"The body is limited to {MAX_BODY_BYTES}.")
        return self.rfile.read(length) if length else b""

    def _serve_api(
        self,
        store: SandboxStore,
        config: SandboxConfig,
        path: str,
        query: list[tuple[str, str]],
        body: bytes,
    ) -> ApiResponse | None:
        """Faults first (queued, then latency, then random), then the operation itself.

        Returns the answer to send, or None to drop the connection without one.
        """
        fault = store.pop_fail_next()
        if fault is None:
            faults = store.faults()
            if faults.latency_s > 0:
                time.sleep(faults.latency_s)
            fault = store.draw_random_fault()
        if fault == DROP:
            return None
        if fault is not None:
            return _fault_answer(fault, store.faults().retry_after_s)

        request = ApiRequest(
            method=self.command,
            path=path,
            query=query,
            body=body,
            content_type=self.headers.get("Content-Type"),
            authorization=self.headers.get("Authorization"),
            origin=self._origin(),
        )
        try:
            response = handle_api(store, config, request)
        except Exception:
            _log.exception("sandbox: unexpected error in %s %s", self.command, path)
            response = problem(500, "Internal Server Error", "Unexpected sandbox error.")
        if response.committed:
            after = store.draw_post_commit_fault()
            if after == DROP:
                return None
            if after is not None:
                response = _fault_answer(after, store.faults().retry_after_s)
        return response

    def _serve_control(self, sandbox: SandboxServer, path: str, body: bytes) -> ApiResponse:
        """Endpoints for a user or a test in another process; no auth, loopback tool."""
        endpoint = _CONTROL_ENDPOINTS.get((self.command, path.rstrip("/")))
        if endpoint is None:
            return problem(404, "Not Found", f"No sandbox control endpoint {self.command} {path}.")
        return endpoint(sandbox, body)

    # ------------------------------------------------------------------ answers

    def _send(self, response: ApiResponse) -> int:
        payload = json.dumps(response.body, separators=(",", ":")).encode("utf-8")
        self.send_response(response.status, HTTPStatus(response.status).phrase)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        return response.status

    def _drop(self) -> None:
        """Close without a byte of answer: the client sees a disconnect, not an HTTP error."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _origin(self) -> str:
        """``http://`` plus the Host the client used, so absolute links stay on that host."""
        host = (self.headers.get("Host") or "").strip()
        if not _HOST_HEADER.match(host):
            address, port = self.server.server_address[:2]
            text = address.decode() if isinstance(address, bytes) else str(address)
            host = f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
        return f"http://{host}"


def _control_health(_sandbox: SandboxServer, _body: bytes) -> ApiResponse:
    return ApiResponse(200, {"ok": True})


def _control_state(sandbox: SandboxServer, _body: bytes) -> ApiResponse:
    store = sandbox.store
    state = {
        "purchases": store.purchases_wire(),
        "vouchers": store.voucher_count(),
        "requests": store.request_count(),
    }
    return ApiResponse(200, state)


def _control_get_faults(sandbox: SandboxServer, _body: bytes) -> ApiResponse:
    return ApiResponse(200, sandbox.faults().model_dump(mode="json"))


def _control_put_faults(sandbox: SandboxServer, body: bytes) -> ApiResponse:
    try:
        faults = FaultSettings.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return validation_problem(_pydantic_errors(exc))
    sandbox.set_faults(faults)
    return ApiResponse(200, faults.model_dump(mode="json"))


def _json_body(body: bytes) -> object:
    """The body as JSON; None when empty or not JSON."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def _control_put_token(sandbox: SandboxServer, body: bytes) -> ApiResponse:
    data = _json_body(body)
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str):
        return validation_problem({"token": ['A JSON body {"token": "..."} is needed.']})
    sandbox.set_token(token)
    return ApiResponse(200, {"ok": True})


def _codes(data: object) -> list[str] | None:
    codes = data.get("voucherCodes") if isinstance(data, dict) else None
    if isinstance(codes, list) and all(isinstance(c, str) for c in codes):
        return codes
    return None


def _control_put_vouchers(sandbox: SandboxServer, body: bytes) -> ApiResponse:
    """``{"voucherCodes": [...], "set": {"isUsed": true, "reservationCode": "R-1", ...}}``."""
    data = _json_body(body)
    codes = _codes(data)
    changes = data.get("set") if isinstance(data, dict) else None
    if codes is None or not isinstance(changes, dict):
        return validation_problem(
            {"body": ['A JSON body {"voucherCodes": ["..."], "set": {"isUsed": true}} is needed.']}
        )
    try:
        missing = sandbox.update_vouchers(codes, changes)
    except ValidationError as exc:
        return validation_problem(_pydantic_errors(exc))
    return ApiResponse(200, {"updated": len(codes) - len(missing), "notFound": missing})


def _control_put_expiry(sandbox: SandboxServer, body: bytes) -> ApiResponse:
    """``{"shiftDays": -300, "voucherCodes": [...]}`` (every voucher without codes)."""
    data = _json_body(body)
    days = data.get("shiftDays") if isinstance(data, dict) else None
    if not isinstance(days, int | float) or isinstance(days, bool):
        return validation_problem({"shiftDays": ["A number of days (negative: sooner)."]})
    codes = _codes(data) if isinstance(data, dict) and "voucherCodes" in data else None
    return ApiResponse(200, {"moved": sandbox.shift_expiry(days, codes)})


_CONTROL_ENDPOINTS: dict[tuple[str, str], Callable[[SandboxServer, bytes], ApiResponse]] = {
    ("GET", CONTROL_PREFIX + "/health"): _control_health,
    ("GET", CONTROL_PREFIX + "/state"): _control_state,
    ("GET", CONTROL_PREFIX + "/faults"): _control_get_faults,
    ("PUT", CONTROL_PREFIX + "/faults"): _control_put_faults,
    ("PUT", CONTROL_PREFIX + "/token"): _control_put_token,
    ("PUT", CONTROL_PREFIX + "/vouchers"): _control_put_vouchers,
    ("PUT", CONTROL_PREFIX + "/expiry"): _control_put_expiry,
}


def _pydantic_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "$"
        errors.setdefault(key, []).append(err["msg"])
    return errors


class SandboxServer:
    """A Certiverse-compatible API on a loopback port, with faults and inspection for tests.

    ``start()`` serves in a daemon thread and returns once listening; ``stop()`` (or leaving the
    ``with`` block) shuts the listener and any open connections down.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        catalog: Catalog | None = None,
        log_requests: bool = False,
        log_stream: IO[str] | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        #: What the sandbox was loaded with (tests read names from it rather than hard-code).
        self.catalog = catalog or load_catalog(self.config.data_path)
        self.store = SandboxStore(self.catalog, self.config)
        self._host = host
        self._port = port
        self._log_requests = log_requests
        self._log_stream = log_stream
        self._log_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SandboxServer:
        """Bind and serve in the background; returns when the socket is listening."""
        if self._httpd is not None:
            return self
        server_class = _HTTPServerV6 if ":" in self._host else _HTTPServer
        httpd = server_class((self._host, self._port), self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"certiverse-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = None
        self._thread = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://host:port`` (control endpoints live under ``/_sandbox``)."""
        host = self._host
        if host in ("", "0.0.0.0"):  # noqa: S104 - a reachable address for a wildcard bind
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The client's base URL, ``/api`` included."""
        return self.root_url + API_PREFIX

    # ------------------------------------------------------------------ runtime control

    def set_faults(self, faults: FaultSettings) -> None:
        self.store.set_faults(faults)

    def faults(self) -> FaultSettings:
        return self.store.faults()

    def set_token(self, token: str) -> None:
        self.store.set_token(token)

    # ------------------------------------------------------------------ inspection

    def purchases(self) -> list[PartnerVoucherPurchaseModel]:
        return self.store.purchases()

    def vouchers(self) -> list[PartnerVoucherModel]:
        return self.store.vouchers()

    def request_log(self) -> list[RequestRecord]:
        return self.store.request_log()

    def update_vouchers(self, codes: Sequence[str], changes: dict[str, object]) -> list[str]:
        """Mark codes used, reserved, inactive or assigned (wire field names); the missing."""
        return self.store.update_vouchers(codes, changes)

    def shift_expiry(self, days: float, codes: Sequence[str] | None = None) -> int:
        """Move expiry dates by ``days`` (of ``codes``, or every voucher); how many moved."""
        return self.store.shift_expiry(days, codes)

    def clear_request_log(self) -> None:
        self.store.clear_request_log()

    # ------------------------------------------------------------------ logging

    def log_line(
        self, client: str, method: str, path: str, status: int | None, started: float
    ) -> None:
        """One line per request (CLI mode): no query string, headers or bodies, so no secrets."""
        if not self._log_requests:
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        outcome = "dropped" if status is None else str(status)
        stream = self._log_stream or sys.stderr
        line = f"{time.strftime('%H:%M:%S')} {client} {method} {path} {outcome} {elapsed_ms:.1f}ms"
        with self._log_lock, contextlib.suppress(OSError, ValueError):
            print(line, file=stream, flush=True)
