"""``voucher-distributor email preview``: offline on local files, and against a local stack's
accepted templates (chosen as the sender chooses them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from voucher_distributor.domain.email_message import TEMPLATE_VARIABLES
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.main import main

PARTNER, SPRING = "Acme Corp", "Spring Certification Drive"


def _folder(path: Path, subject: str, text: str, html: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "subject.txt").write_text(subject, encoding="utf-8")
    (path / "body.txt").write_text(text, encoding="utf-8")
    (path / "body.html").write_text(html, encoding="utf-8")
    return path


def _eml(out: Path) -> EmailMessage:
    parsed = message_from_bytes((out / "preview.eml").read_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_shipped_default_offline_with_sample_data(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["email", "preview", "--program", SPRING, "--out", str(out)]) == 0
    message = _eml(out)
    assert message["Subject"] == f"Your exam voucher for {SPRING}"
    assert "SAMPLE-VOUCHER-0001" in (out / "preview.txt").read_text(encoding="utf-8")
    assert "<!DOCTYPE html>" in (out / "preview.html").read_text(encoding="utf-8")
    assert "the shipped default" in capsys.readouterr().out


def test_a_local_folder_and_a_csv_row_as_the_pipeline_reads_it(tmp_path, capsys) -> None:
    template = _folder(
        tmp_path / "de",
        "Gutschein für {{ first_name }} {{ last_name }}",
        "Hallo {{ first_name }}, {{ voucher_code }} ({{ program }})\n",
        "<p>Hallo {{ first_name }}</p>\n",
    )
    # Semicolons and German headers, as Excel saves them in Germany.
    people = tmp_path / "people.csv"
    people.write_text(
        "E-Mail;Vorname;Nachname;Programm\r\nada@acme.example;Ada;Lovelace;Spring\r\n"
        "grace@acme.example;Grace;<b>Hopper</b>;Spring\r\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = main([
        "email", "preview", "--template", str(template), "--row", f"{people}:2",
        "--out", str(out), "--json",
    ])  # fmt: skip
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["subject"] == "Gutschein für Grace <b>Hopper</b>"
    assert shown["template"] == str(template)
    message = _eml(out)
    assert message["To"] == "grace@acme.example"
    assert "Hallo Grace, SAMPLE-VOUCHER-0001 (Spring)" in (out / "preview.txt").read_text("utf-8")


def test_an_unknown_variable_is_refused_with_exit_2(tmp_path, capsys) -> None:
    template = _folder(tmp_path / "t", "{{ program }}", "{{ frist_name }}\n", "<p>x</p>\n")
    out = tmp_path / "out"
    assert main(["email", "preview", "--template", str(template), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "body.txt line 1: unknown variable 'frist_name'" in error
    assert ", ".join(TEMPLATE_VARIABLES) in error
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--row", "people.csv"],  # no :N
        ["--row", "missing.csv:1"],
        ["--template", "no-such-folder"],
    ],
)
def test_wrong_options_say_what_to_do(tmp_path, capsys, argv) -> None:
    assert main(["email", "preview", *argv, "--out", str(tmp_path / "out")]) == 2
    assert "voucher-distributor email:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(certiverse_url="http://127.0.0.1:9", certiverse_token="unused") as local:
        yield local


def test_against_a_stack_the_accepted_template_as_the_sender_chooses(
    pipeline, tmp_path, capsys
) -> None:
    s3 = pipeline.stack.client("s3")
    folder = f"templates/{PARTNER}/{SPRING}/de/"
    files = {
        "subject.txt": "Ihr Gutschein für {{ program }}",
        "body.txt": "Hallo {{ first_name }}: {{ voucher_code }}\n",
        "body.html": "<p>Hallo {{ first_name }}</p>\n",
    }
    for name, text in files.items():
        s3.put_object(Bucket=pipeline.bucket, Key=folder + name, Body=text.encode())
    pipeline.run_until_idle(timeout_s=30)
    where = ["--endpoint-url", pipeline.stack.endpoint_url]
    common = ["email", "preview", *where, "--partner", PARTNER, "--program", SPRING]
    out = tmp_path / "de"
    assert main([*common, "--language", "de-AT", "--out", str(out)]) == 0
    assert f"{folder} as accepted" in capsys.readouterr().out
    assert _eml(out)["Subject"] == f"Ihr Gutschein für {SPRING}"
    # A later upload that fails its check is never shown: the accepted one still is.
    s3.put_object(Bucket=pipeline.bucket, Key=folder + "subject.txt", Body=b"{{ oops }}")
    pipeline.run_until_idle(timeout_s=30)
    assert main([*common, "--language", "de", "--out", str(out)]) == 0
    assert _eml(out)["Subject"] == f"Ihr Gutschein für {SPRING}"
    capsys.readouterr()
    # No template for English: the shipped default, said so.
    out_en = tmp_path / "en"
    assert main([*common, "--out", str(out_en)]) == 0
    assert "the shipped default" in capsys.readouterr().out
    assert _eml(out_en)["Subject"] == f"Your exam voucher for {SPRING}"
