"""``voucher-distributor programs``: what a partner can buy, asked of the sandbox over HTTP the
three ways ``local run`` reaches Certiverse (the built-in sandbox, ``--certiverse-url`` with
``CERTIVERSE_TOKEN``, a deployed stack's settings with ``--stack``)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from voucher_distributor_cli.main import main
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

from .conftest import SANDBOX_TOKEN

SAMPLE = Path(__file__).parents[2] / "cli/voucher_distributor_cli/sandbox/data/sample.json"


def verdicts(out: str) -> dict[str, str]:
    """Program -> its table line, from the text output."""
    found = {}
    for program in json.loads(SAMPLE.read_text("utf-8"))["programs"]:
        (line,) = [text for text in out.splitlines() if f"  {program['name']}  " in f"{text}  "]
        found[program["name"]] = " ".join(line.split())
    return found


def test_the_built_in_sandbox_says_what_a_partner_can_buy_and_why_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["programs", "--partner", "acme corp"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Certiverse: the built-in sandbox (http://127.0.0.1:")
    assert "partner: Acme Corp (active)" in out
    said = verdicts(out)
    assert said["Spring Certification Drive"] == "yes $0 active Spring Certification Drive"
    assert said["Professional Architect Certification"].startswith(
        "no $149 active Professional Architect Certification program 'Professional Architect "
        "Certification' costs 149 per voucher for partner 'Acme Corp'; only $0 programs"
    )
    assert said["Legacy Networking Exam 2019"].endswith("is not active")
    assert said["Winter Certification Drive 2024"].startswith("no $0 archived")
    assert (
        "'Acme Corp' is not assigned to program 'Globex Partner Pilot'"
        in (said["Globex Partner Pilot"])
    )
    # An enforced assignment is refused as pre-flight refuses it (no AcceptPortalAssignment).
    assert said["Example Corp Employee Upskilling"].startswith(
        "no $0 active Example Corp Employee Upskilling program 'Example Corp Employee "
        "Upskilling' lets only the account whose e-mail is assigned to the voucher in Certiverse"
    )
    assert said["Example Corp Employee Upskilling"].endswith(
        "only addresses at example.com; enforced assignment*"
    )
    assert "* enforced assignment: the exam can only be booked from the account" in out
    assert "3 of 8 programs can be bought by 'Acme Corp'" in out


def test_json_through_certiverse_url_judges_an_assigned_partner(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CERTIVERSE_TOKEN", SANDBOX_TOKEN)
    url = sandbox.base_url
    code = main(["programs", "--certiverse-url", url, "--partner", "Globex Learning", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["certiverse"] == url.rstrip("/") + "/"
    assert shown["partner"] == {"name": "Globex Learning", "status": "Active"}
    programs = {p["name"]: p for p in shown["programs"]}
    pilot = programs["Globex Partner Pilot"]
    assert (pilot["canBuy"], pilot["price"]) == (False, "0")
    assert "AcceptPortalAssignment=true" in pilot["whyNot"]
    assert pilot["enforcedAssignment"] is True
    priced = programs["Professional Architect Certification"]
    assert priced["canBuy"] is False
    assert "costs 149 per voucher" in priced["whyNot"]
    assert programs["Example Corp Employee Upskilling"]["emailDomains"] == ["example.com"]


def test_an_inactive_partner_can_buy_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["programs", "--partner", "Initech Training", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {p["whyNot"] for p in shown["programs"]} == {"partner 'Initech Training' is not active"}


def test_without_partner_several_are_listed_and_one_is_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["programs"])
    out = capsys.readouterr().out
    assert code == 0
    assert "5 partners; pass --partner NAME to see what one can buy:" in out
    assert "  Umbrella Academy  archived" in out
    assert "  can buy  " not in out  # no partner judged: no verdict column
    assert "assigned partners only: Globex Learning ($0 for assigned partners)" in out

    catalogue = json.loads(SAMPLE.read_text("utf-8"))
    catalogue["partners"] = [p for p in catalogue["partners"] if p["name"] == "Acme Corp"]
    data = tmp_path / "one-partner.json"
    data.write_text(json.dumps(catalogue), "utf-8")
    monkeypatch.setenv("CERTIVERSE_TOKEN", SANDBOX_TOKEN)
    with SandboxServer(SandboxConfig(token=SANDBOX_TOKEN, data_path=data)) as server:
        code = main(["programs", "--certiverse-url", server.base_url])
    out = capsys.readouterr().out
    assert code == 0
    assert "partner: Acme Corp (active)" in out
    assert "3 of 8 programs can be bought by 'Acme Corp'" in out


def test_an_unknown_partner_is_a_usage_error_with_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["programs", "--partner", "Acme Crop"])
    seen = capsys.readouterr()
    assert code == 2
    assert seen.out == ""
    assert seen.err.strip() == (
        "voucher-distributor programs: no Certiverse partner is named exactly 'Acme Crop' — "
        "did you mean 'Acme Corp'?"
    )


def test_a_wrong_token_is_a_clear_error(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CERTIVERSE_TOKEN", "not-the-token")
    code = main(["programs", "--certiverse-url", sandbox.base_url])
    seen = capsys.readouterr()
    assert code == 1
    assert seen.out == ""
    assert "401" in seen.err
    assert "(the token tried: CERTIVERSE_TOKEN)" in seen.err
    assert "Traceback" not in seen.err


def test_an_unreachable_certiverse_fails_within_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CERTIVERSE_TOKEN", "any")
    started = time.monotonic()
    code = main(["programs", "--certiverse-url", f"http://127.0.0.1:{port}/api"])
    seen = capsys.readouterr()
    assert code == 1
    assert time.monotonic() - started < 15
    assert "Certiverse could not be asked: cannot connect to Certiverse" in seen.err
    monkeypatch.delenv("CERTIVERSE_TOKEN")
    code = main(["programs", "--certiverse-url", f"http://127.0.0.1:{port}/api"])
    assert code == 1
    assert "--certiverse-url needs the API token in CERTIVERSE_TOKEN" in capsys.readouterr().err


def test_a_deployed_stack_lends_its_url_and_token_secret(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "CERTIVERSE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    region, stack = "eu-west-1", "vd-programs"
    with mock_aws():
        secret = boto3.client("secretsmanager", region_name=region).create_secret(
            Name="certiverse-token", SecretString=json.dumps({"token": SANDBOX_TOKEN})
        )["ARN"]
        env = {
            "CERTIVERSE_BASE_URL": sandbox.base_url,
            "CERTIVERSE_TOKEN_SECRET_ARN": secret,
            "ACCEPT_PORTAL_ASSIGNMENT": "true",  # and its AcceptPortalAssignment
        }
        boto3.client("cloudformation", region_name=region).create_stack(
            StackName=stack, TemplateBody=json.dumps(_stack_template(env))
        )
        code = main(["programs", "--stack", stack, "--region", region, "--partner", "Acme Corp"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"Certiverse: {sandbox.base_url.rstrip('/')}/ (the stack's setting)")
    # The stack accepts portal assignment: the enforced-assignment program can be bought.
    assert "4 of 8 programs can be bought by 'Acme Corp'" in out


def _stack_template(env: dict[str, str]) -> dict[str, object]:
    role = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    return {
        "Resources": {
            "LedgerTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                },
            },
            "FunctionRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {"AssumeRolePolicyDocument": role},
            },
            "PurchaseFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "app.handler",
                    "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
                    "Code": {"ZipFile": "def handler(event, context):\n    return None\n"},
                    "Environment": {"Variables": env},
                },
            },
        }
    }


def test_programs_is_in_the_grouped_help_with_its_defaults_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    overview = capsys.readouterr().out
    ops = overview.split("operate a deployed or local stack:")[1].split("run the pipeline")[0]
    assert "programs" in ops
    with pytest.raises(SystemExit):
        main(["programs", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in (
        "--partner NAME",
        "(default: the only partner, when Certiverse has one)",
        "(default: the stack's setting with --stack, else the built-in sandbox on loopback)",
        "exit codes: 0 listed 1 Certiverse could not be asked",
    ):
        assert words in text, words
