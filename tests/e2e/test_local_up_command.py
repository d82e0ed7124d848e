"""``voucher-distributor local up`` as a user runs it: a process that prints one JSON line, serves
the API and the AWS endpoint until Ctrl-C, and answers the operator commands meanwhile."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

CLI = [sys.executable, "-m", "voucher_distributor_cli.main"]
SPRING = "Spring Certification Drive"


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    where = tmp_path_factory.mktemp("up")
    log, stderr = where / "up.log", (where / "stderr.txt").open("w+", encoding="utf-8")
    process = subprocess.Popen(
        [*CLI, "local", "up", "--partner", "Acme Corp", "--log", str(log),
         "--parameter-overrides", "ApprovalThreshold=50"],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        stderr.seek(0)
        pytest.fail(f"local up printed nothing: {stderr.read()}")
    try:
        yield process, {**json.loads(line), "_log": str(log), "_stderr": stderr.name}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        stderr.close()


def ops(endpoints: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--endpoint-url", endpoints["endpointUrl"], "--stack", endpoints["stack"]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def signed_post(endpoints: dict[str, Any], document: dict[str, Any]) -> httpx.Response:
    body = json.dumps(document)
    msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    signature = Webhook(endpoints["apiClientSecret"]).sign(msg_id, now, body)
    return httpx.post(
        endpoints["apiUrl"] + "/v1/distributions",
        content=body,
        headers={"content-type": "application/json", "webhook-id": msg_id,
                 "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature},
        timeout=30,
    )  # fmt: skip


def test_the_json_line_names_every_endpoint(
    running: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    _, endpoints = running
    assert set(endpoints) >= {
        "endpointUrl", "region", "stack", "bucket", "requestQueueUrl", "table", "apiUrl",
        "apiClientId", "apiClientSecret", "callbackSigningSecret", "certiverseUrl",
    }  # fmt: skip
    assert endpoints["apiClientSecret"].startswith("whsec_")
    for url in ("endpointUrl", "apiUrl", "certiverseUrl"):
        assert endpoints[url].startswith("http://127.0.0.1:")


def test_aws_tools_and_operator_commands_work_against_it(
    running: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    _, endpoints = running
    s3 = boto3.client(
        "s3", endpoint_url=endpoints["endpointUrl"], region_name=endpoints["region"],
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.put_object(
        Bucket=endpoints["bucket"], Key="incoming/team.csv",
        Body=f"email,program_name\r\nup1@example.com,{SPRING}\r\n".encode(),
    )  # fmt: skip
    # A request over the API that waits for approval (ApprovalThreshold=50 from the command line)
    people = [{"email": f"wait{i}@example.com"} for i in range(60)]
    answer = signed_post(
        endpoints, {"requestId": "up-big", "programName": SPRING, "recipients": people}
    )
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batchId"]
    deadline = time.monotonic() + 90
    while True:
        status = ops(endpoints, "status", batch_id, "--json")
        if status.returncode == 0 and json.loads(status.stdout)["status"] == "AWAITING_APPROVAL":
            break
        assert time.monotonic() < deadline, status.stderr
        time.sleep(0.5)
    approved = ops(endpoints, "approve", batch_id, "--json")
    assert approved.returncode == 0, approved.stderr
    while json.loads(ops(endpoints, "status", batch_id, "--json").stdout)["status"] != "DONE":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    found = ops(endpoints, "find", "up1@example.com", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["status"] == "assigned"
    # The redemption sync, once, now: it reaches the stack's Certiverse (the sandbox) unasked.
    synced = ops(endpoints, "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["purchasesRead"] >= 2  # the upload's and the request's
    clients = ops(endpoints, "api-client", "list")
    assert clients.returncode == 0, clients.stderr
    assert [c["clientId"] for c in json.loads(clients.stdout)] == ["local-hr"]


def test_issue25_10_it_prints_an_upload_line_that_needs_no_aws_configuration(
    running: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path
) -> None:
    """The ready line's upload works as printed on a machine without an AWS configuration
    (where a bare ``aws s3 cp`` stops at "Unable to locate credentials")."""
    _, endpoints = running
    stderr = Path(endpoints["_stderr"]).read_text(encoding="utf-8")
    (upload,) = [line.strip() for line in stderr.splitlines() if " s3 cp " in line]
    words = shlex.split(upload)
    env = dict(word.split("=", 1) for word in words[:3])
    assert env == {
        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": endpoints["region"],
    }  # fmt: skip
    assert words[3:7] == ["aws", "--endpoint-url", endpoints["endpointUrl"], "s3"]
    assert words[-1] == f"s3://{endpoints['bucket']}/incoming/people.csv"
    (status,) = [line.strip() for line in stderr.splitlines() if line.strip().endswith(" status")
                 or " status --endpoint-url" in line]  # fmt: skip
    assert status.endswith(
        f"--endpoint-url {endpoints['endpointUrl']} --stack {endpoints['stack']}"
    )
    # What `aws s3 cp` does with exactly those variables and no configuration at all:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    nowhere = str(tmp_path / "none")
    put = subprocess.run(
        [sys.executable, "-c",
         "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1]).put_object("
         "Bucket=sys.argv[2], Key='incoming/ready.csv', Body=b'email\\r\\nr@example.com\\r\\n')",
         endpoints["endpointUrl"], endpoints["bucket"]],
        env={**bare, **env, "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr


def test_ctrl_c_stops_it_cleanly(running: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    process, endpoints = running
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 0
    assert "local stack stopped" in Path(endpoints["_stderr"]).read_text(encoding="utf-8")
    with pytest.raises(httpx.TransportError):
        httpx.get(endpoints["apiUrl"] + "/v1/holdings", timeout=5)
    # The functions logged to --log, not to stdout (which held the JSON line alone).
    assert process.stdout is not None
    assert process.stdout.read() == ""
    log = Path(endpoints["_log"]).read_text(encoding="utf-8")
    assert "voucher-distributor-dev-api" in log


def test_issue25_11_an_outage_is_one_line_per_failure_and_the_trace_is_in_the_log(
    tmp_path: Path,
) -> None:
    """Certiverse unreachable (an outage ``local up`` expects to ride out): each failed
    delivery is one line on stderr naming the log; the tracebacks are in the log file. A
    client hanging up mid-answer prints nothing."""
    log, stderr_path = tmp_path / "up.log", tmp_path / "stderr.txt"
    with stderr_path.open("w+", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [*CLI, "local", "up", "--partner", "Acme Corp", "--log", str(log),
             "--certiverse-url", "http://127.0.0.1:9/api"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "CERTIVERSE_TOKEN": "outage-token"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            endpoints = json.loads(process.stdout.readline())
            sqs = boto3.client(
                "sqs", endpoint_url=endpoints["endpointUrl"], region_name=endpoints["region"],
                aws_access_key_id="x", aws_secret_access_key="x",
            )  # fmt: skip
            sqs.send_message(
                QueueUrl=endpoints["requestQueueUrl"],
                MessageBody=json.dumps({"requestId": "outage-1", "programName": SPRING,
                                        "recipients": [{"email": "o@example.com"}]}),
            )  # fmt: skip
            host, port = endpoints["apiUrl"].removeprefix("http://").split(":")
            for _ in range(3):  # a client that sends a request and hangs up at once
                with socket.create_connection((host, int(port))) as hang_up:
                    hang_up.sendall(b"GET /v1/holdings?email=a@b.c HTTP/1.1\r\nHost: x\r\n\r\n")
                    hang_up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            deadline = time.monotonic() + 240
            while "raised on a batch" not in stderr_path.read_text(encoding="utf-8"):
                assert time.monotonic() < deadline, stderr_path.read_text(encoding="utf-8")
                time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
    said = stderr_path.read_text(encoding="utf-8")
    assert "Traceback" not in said, said
    failures = [line for line in said.splitlines() if "raised on a batch" in line]
    assert failures
    for line in failures:
        assert line.startswith("local up: IngestRequestFunction raised on a batch of 1 message")
        assert f"the trace is in {log}" in line
    assert "Traceback" in log.read_text(encoding="utf-8")
