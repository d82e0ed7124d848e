"""``voucher-distributor api-client add|update|list`` as an operator types them: each client
bound to its partners (issue 24), against the template's stack in moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from voucher_distributor_cli.local.runner import MotoStack
from voucher_distributor_cli.main import main

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def where() -> Iterator[list[str]]:
    with MotoStack(TEMPLATE) as stack:
        yield ["--endpoint-url", stack.endpoint_url, "--stack", stack.stack_name]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_new_client_must_name_its_partners_or_all(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["api-client", "add", "workday", *where])
    assert usage.value.code == 2
    assert "--partners" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["api-client", "add", "both", "--partners", "Acme Corp", "--all-partners", *where])
    capsys.readouterr()
    code, out, _ = run(["api-client", "add", "workday", "--partners", "Acme Corp, Acme EMEA",
                        "--programs", "Spring Certification Drive", *where], capsys)  # fmt: skip
    assert code == 0
    added = json.loads(out)
    assert added["partners"] == ["Acme Corp", "Acme EMEA"]
    assert added["programs"] == ["Spring Certification Drive"]
    assert added["secret"].startswith("whsec_")
    code, out, _ = run(["api-client", "add", "ops", "--all-partners", "--scopes", "read", *where],
                       capsys)  # fmt: skip
    assert code == 0
    assert json.loads(out)["partners"] == "all"


def test_update_narrows_and_list_shows_partners(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(["api-client", "add", "globex", "--partners", "Globex Learning", *where],
                     capsys)  # fmt: skip
    assert code == 0
    code, out, _ = run(["api-client", "update", "globex", "--partners", "Globex Learning,Initech",
                        "--scopes", "submit,read,approve", *where], capsys)  # fmt: skip
    assert code == 0
    updated = json.loads(out)
    assert updated["partners"] == ["Globex Learning", "Initech"]
    assert updated["scopes"] == ["approve", "read", "submit"]
    code, _, err = run(["api-client", "update", "globex", *where], capsys)
    assert code == 2
    assert "nothing to change" in err
    code, _, err = run(["api-client", "update", "nobody", "--all-partners", *where], capsys)
    assert code == 2
    assert "no API client 'nobody'" in err
    code, out, _ = run(["api-client", "list", *where], capsys)
    listed = {c["clientId"]: c for c in json.loads(out)}
    assert listed["globex"]["partners"] == ["Globex Learning", "Initech"]
    assert "unbound" not in listed["globex"]
    assert all("secret" not in c for c in listed.values())
