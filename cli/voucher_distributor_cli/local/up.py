"""``voucher-distributor local up``: the whole stack on loopback until Ctrl-C.

Moto (the template's stack), the Certiverse sandbox (unless ``--certiverse-url``), the HTTP
API on a loopback port — the API function's own handler, fed API Gateway's payload 2.0 event —
and a loop that delivers queue messages to the functions (and runs the scheduled ones). The
functions run in this process and share its environment variables, so one lock lets one
invocation run at a time, as the local runner always has.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from voucher_distributor.adapters.callbacks import webhook_secret
from voucher_distributor.models.api import Scope
from voucher_distributor.models.ledger import BatchRecord
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.local.defaults import SANDBOX_TOKEN
from voucher_distributor_cli.local.run import LocalPipeline, LocalRunError
from voucher_distributor_cli.local.runner import LocalLambdas
from voucher_distributor_cli.local.runner.template import DEFAULT_REGION
from voucher_distributor_cli.ops.api_clients import add_client
from voucher_distributor_cli.ops.target import Target
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

log = logging.getLogger(__name__)

API_FUNCTION = "ApiFunction"
#: The API client ``local up`` creates, with every scope.
LOCAL_CLIENT_ID = "local-hr"
#: API Gateway's HTTP API refuses larger bodies (10 MB) before any function sees them.
MAX_API_BODY = 10 * 1024 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/problem+json")
#: What ``aws`` needs to reach moto without an AWS configuration (any values pass).
DUMMY_AWS_ENV = "AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION"
#: How long Ctrl-C waits for the stack to stop before leaving anyway.
STOP_GRACE_S = 30.0


def api_gateway_event(
    method: str, target: str, headers: dict[str, str], body: bytes, host: str
) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) event, as API Gateway gives it to the function."""
    parts = urlsplit(target)
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    lowered.setdefault("x-forwarded-proto", "http")
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    content_type = lowered.get("content-type", "")
    textual = not body or content_type.startswith(_TEXT_TYPES)
    if textual:
        try:
            body.decode()
        except UnicodeDecodeError:  # text in another encoding travels as bytes, base64-encoded
            textual = False
    now = datetime.now(UTC)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": lowered,
        **({"queryStringParameters": query} if query else {}),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".", maxsplit=1)[0],
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": body.decode() if textual else base64.b64encode(body).decode(),
        "isBase64Encoded": not textual,
    }


class LocalApiServer(ThreadingHTTPServer):
    """Loopback HTTP in front of the API function (``invoke`` takes an event, gives a result)."""

    daemon_threads = True

    def __init__(self, invoke: Callable[[dict[str, Any]], dict[str, Any]], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _ApiHandler)
        self.invoke = invoke

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        """A client hanging up before its answer (a curl killed, a test's timeout) is routine:
        one debug line, never a traceback on the terminal."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("api: %s hung up: %s", client_address, type(exc).__name__)
            return
        log.exception("api: unexpected error serving %s", client_address)


class _OneLine(logging.Formatter):
    """A log record as one line on the terminal: its message and, for an exception, its
    type and first line; the whole trace goes to the log file (``where``)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self._where = where

    def format(self, record: logging.LogRecord) -> str:
        text = f"local up: {record.getMessage()}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            said = (str(exc).splitlines() or [""])[0][:300]
            text += f" ({type(exc).__name__}: {said}; the trace is in {self._where})"
        return text


@contextlib.contextmanager
def terminal_and_log(log_stream: IO[str], terminal: IO[str], where: str) -> Iterator[None]:
    """While ``local up`` runs, what its own loops and the runner log (a function that raised
    during a Certiverse outage, a client that hung up): one line each on the terminal, the
    whole record with its trace in the log file. Nothing reaches Python's last-resort handler,
    which prints every traceback."""
    logger = logging.getLogger("voucher_distributor_cli")
    to_log = logging.StreamHandler(log_stream)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.setFormatter(_OneLine(where))
    before = (logger.level, logger.propagate)
    logger.addHandler(to_log)
    logger.addHandler(to_terminal)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(to_log)
        logger.removeHandler(to_terminal)
        logger.setLevel(before[0])
        logger.propagate = before[1]


def ready_lines(endpoints: dict[str, Any]) -> list[str]:
    """What to paste to use the stack: an upload with the dummy credentials moto takes
    (without an AWS configuration ``aws`` stops at "Unable to locate credentials"), and the
    ``status`` command with the stack's options."""
    where = f"--endpoint-url {endpoints['endpointUrl']}"
    upload = f"s3://{endpoints['bucket']}/incoming/people.csv"
    target = argparse.Namespace(endpoint_url=endpoints["endpointUrl"], stack=endpoints["stack"])
    return [
        "ready. Upload a CSV (moto takes any credentials; these need no AWS configuration):",
        f"  {DUMMY_AWS_ENV}={endpoints['region']} aws {where} s3 cp people.csv {upload}",
        "and follow it (`status BATCH`; without BATCH the batches awaiting approval):",
        f"  {command_hint(target, 'status')}",
    ]


class _ApiHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: " + format, *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_API_BODY:
            self._answer(413, {"content-type": "application/json"},
                         b'{"message":"Request Entity Too Large"}')  # fmt: skip
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        event = api_gateway_event(self.command, self.path, dict(self.headers.items()), body, host)
        try:
            result = self.server.invoke(event)
        except Exception:  # the real API answers 500 when the function itself fails
            log.exception("the API function failed")
            self._answer(500, {"content-type": "application/json"},
                         b'{"message":"Internal Server Error"}')  # fmt: skip
            return
        payload = str(result.get("body") or "")
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        self._answer(int(result.get("statusCode", 200)), headers, data)

    # Every method is served alike (http.server calls do_<METHOD>).
    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LocalStackUp:
    """Everything ``local up`` runs, as a context manager (tests use it directly)."""

    def __init__(
        self,
        *,
        certiverse_url: str | None = None,
        certiverse_token: str | None = None,
        partner: str = "",
        program: str = "",
        parameters: dict[str, str] | None = None,
        api_port: int = 0,
        seed: int | None = None,
        log_stream: IO[str] | None = None,
        sandbox_config: SandboxConfig | None = None,
        mail_dir: Path | None = None,
    ) -> None:
        self._certiverse_url = certiverse_url
        self._certiverse_token = certiverse_token
        self._partner, self._program = partner, program
        self._parameters = parameters or {}
        self._api_port = api_port
        self._seed = seed
        self._log_stream = log_stream
        self._sandbox_config = sandbox_config
        self._mail_dir = mail_dir
        self._lock = threading.Lock()
        # API requests waiting for the lock: the pump lets them in between its pumps (a lock
        # is not fair: the pump thread, taking it again at once, could keep it for minutes
        # while a large batch is mailed).
        self._api_waiting = 0
        self._api_done = threading.Condition()
        self._stop = threading.Event()
        self._held = threading.Event()
        self._exit = contextlib.ExitStack()
        self.sandbox: SandboxServer | None = None
        self.pipeline: LocalPipeline | None = None
        self.api: LocalApiServer | None = None
        self.client_secret = ""
        self.pump_errors = 0
        self.scheduled_runs = 0

    def __enter__(self) -> LocalStackUp:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._exit.close()

    def _start(self) -> None:
        url, token = self._certiverse_url, self._certiverse_token
        if url is None:
            config = self._sandbox_config or SandboxConfig(
                token=SANDBOX_TOKEN, generation_delay_s=2.0, seed=self._seed
            )
            self.sandbox = self._exit.enter_context(SandboxServer(config, host="127.0.0.1", port=0))
            url, token = self.sandbox.base_url, config.token
        elif not token:
            raise LocalRunError("--certiverse-url needs the API token in CERTIVERSE_TOKEN")
        self.certiverse_url = url
        self.pipeline = self._exit.enter_context(
            LocalPipeline(
                certiverse_url=url,
                certiverse_token=token or "",
                default_partner=self._partner,
                default_program=self._program,
                log_stream=self._log_stream,
                parameters=self._parameters,
                email=True,
                mail_dir=self._mail_dir,
            )
        )
        self._point_ops_at_certiverse(url)
        added = add_client(
            self.target(),
            LOCAL_CLIENT_ID,
            scopes=list(Scope),
            description="made by `local up`",
            all_partners=True,
        )
        self.client_secret = added["secret"]
        self.api = LocalApiServer(self._invoke_api, port=self._api_port)
        self._exit.callback(self.api.server_close)
        self._exit.callback(self.api.shutdown)
        threading.Thread(target=self.api.serve_forever, name="local-api", daemon=True).start()
        # The completion callback's assignmentsUrl names this loopback API (the functions
        # share one process, and so their settings: an override reaches the report function).
        self._lambdas().env_overrides["API_BASE_URL"] = self.api.base_url
        pump = threading.Thread(target=self._pump, name="local-pump", daemon=True)
        pump.start()
        self._exit.callback(lambda: pump.join(timeout=10))
        self._exit.callback(self._stop.set)

    # ------------------------------------------------------------------ what it serves

    def _running(self) -> LocalPipeline:
        if self.pipeline is None:
            raise RuntimeError("local up is not running")
        return self.pipeline

    def _lambdas(self) -> LocalLambdas:
        lambdas = self._running().lambdas
        if lambdas is None:
            raise RuntimeError("local up is not running")
        return lambdas

    def target(self) -> Target:
        return Target.local(self._running().stack.endpoint_url)

    def endpoints(self) -> dict[str, Any]:
        """The JSON line ``local up`` prints: everything a client needs to reach the stack."""
        pipeline, api = self._running(), self.api
        if api is None:
            raise RuntimeError("local up is not running")
        stack = pipeline.stack
        env = stack.function_environment(API_FUNCTION)
        callback_secret = ""
        if arn := env.get("CALLBACK_SECRET_ARN"):
            got = stack.client("secretsmanager").get_secret_value(SecretId=arn)
            callback_secret = webhook_secret(str(got.get("SecretString") or ""))
        return {
            "endpointUrl": stack.endpoint_url,
            "region": DEFAULT_REGION,
            "stack": stack.stack_name,
            "bucket": pipeline.bucket,
            "requestQueueUrl": pipeline.queue_url("RequestQueue"),
            "table": env.get("LEDGER_TABLE", ""),
            "apiUrl": api.base_url,
            "apiClientId": LOCAL_CLIENT_ID,
            "apiClientSecret": self.client_secret,
            "callbackSigningSecret": callback_secret,
            "certiverseUrl": self.certiverse_url,
            "mailDir": str(pipeline.mail_dir) if pipeline.mail_dir is not None else None,
        }

    def batch(self, batch_id: str) -> BatchRecord | None:
        return self._running().ledger.batches.get_batch(batch_id)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the functions still (no delivery, no API call) while a test looks around."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def deliveries_held(self) -> Iterator[None]:
        """No queue message is delivered meanwhile (the API still answers): what the API put
        on a queue stays there to be counted."""
        self._held.set()
        with self._lock:  # a delivery under way ends first
            pass
        try:
            yield
        finally:
            self._held.clear()

    # ------------------------------------------------------------------ loops

    def _invoke_api(self, event: dict[str, Any]) -> dict[str, Any]:
        lambdas = self._lambdas()
        with self._api_done:
            self._api_waiting += 1
        try:
            with self._lock, self._running().logs_routed():
                result: dict[str, Any] = lambdas.invoke(API_FUNCTION, event)
        finally:
            with self._api_done:
                self._api_waiting -= 1
                self._api_done.notify_all()
        return result

    def _pump(self) -> None:
        lambdas = self._lambdas()
        # Scheduled functions (the redemption sync) run at their rate, the first time one
        # period after startup, as a new EventBridge schedule would.
        due = {fid: time.monotonic() + rate for fid, rate in lambdas.scheduled_functions().items()}
        while not self._stop.is_set():
            delivered = 0
            if self._held.is_set():
                self._stop.wait(0.05)
                continue
            with self._api_done:  # API requests first (each waits a pump at most)
                self._api_done.wait_for(lambda: self._api_waiting == 0, timeout=5)
            try:
                with self._lock, self._running().logs_routed():
                    delivered = lambdas.pump_once().delivered
                    for function_id, at in due.items():
                        if time.monotonic() >= at:
                            due[function_id] = at + lambdas.scheduled_functions()[function_id]
                            lambdas.run_scheduled(function_id)
                            self.scheduled_runs += 1
            except Exception:  # keep serving: the message returns to its queue and retries
                self.pump_errors += 1
                log.exception("delivering queue messages or running a schedule failed")
            if not delivered:
                self._stop.wait(0.1)

    def _point_ops_at_certiverse(self, url: str) -> None:
        """The functions' configuration names the sandbox (or --certiverse-url), so operator
        commands that ask Certiverse (sync, reconcile, programs) reach the same one. The
        template only takes https:// URLs; the local runner passes the URL in-process."""
        stack = self._running().stack
        client = stack.client("lambda")
        for function_id in stack.functions:
            name = stack.function_name(function_id)
            env = stack.function_environment(function_id)
            client.update_function_configuration(
                FunctionName=name,
                Environment={"Variables": {**env, "CERTIVERSE_BASE_URL": url}},
            )


def serve_until_interrupted(up: LocalStackUp) -> None:
    """Print the endpoints line on stdout, then wait for Ctrl-C (SIGINT) or SIGTERM."""
    line = json.dumps(up.endpoints())
    # While a function runs, sys.stdout is its log file: read sys.stdout only while none does.
    with up.paused():
        print(line, file=sys.stdout, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the local stack…", file=sys.stderr, flush=True)
        _exit_if_stuck(after_s=STOP_GRACE_S)


def _exit_if_stuck(*, after_s: float) -> None:
    """Stopping waits for the function running now; if that hangs, leave anyway (nothing of a
    local stack outlives the process)."""

    def leave() -> None:
        print(f"the local stack did not stop within {after_s:g} s; exiting", file=sys.stderr,
              flush=True)  # fmt: skip
        os._exit(0)

    timer = threading.Timer(after_s, leave)
    timer.daemon = True
    timer.start()
