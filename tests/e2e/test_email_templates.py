"""Templates a team changes without a deploy (issue 22): uploaded under templates/, checked by
the template function, chosen per program and language by the sender, through the local
pipeline (the S3 notification, the queues, moto's SES)."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from tests.e2e.conftest import CLOUD, PARTNER, SPRING, World
from voucher_distributor_cli.local.runner.local_ses import SentMail

PROGRAM_FOLDER = f"templates/{PARTNER}/{SPRING}/"
GERMAN_FOLDER = f"{PROGRAM_FOLDER}de/"
PROGRAM_TEMPLATE = {
    "subject.txt": "Spring voucher for {{ first_name }}",
    "body.txt": "Hi {{ first_name }}, your Spring code: {{ voucher_code }}\n",
    "body.html": "<p>Hi {{ first_name }}, your Spring code: <b>{{ voucher_code }}</b></p>\n",
}
GERMAN_TEMPLATE = {
    "subject.txt": "Ihr Gutschein für {{ program }}",
    "body.txt": "Hallo {{ first_name }}, Ihr Code: {{ voucher_code }}\n",
    "body.html": "<p>Hallo {{ first_name }}, Ihr Code: <b>{{ voucher_code }}</b></p>\n",
}


def _upload(world: World, folder: str, files: dict[str, str]) -> None:
    s3 = world.pipeline.stack.client("s3")
    for name, text in files.items():
        s3.put_object(Bucket=world.pipeline.bucket, Key=folder + name, Body=text.encode())
    world.pipeline.run_until_idle(timeout_s=60)


def _message(mail: SentMail) -> EmailMessage:
    parsed = message_from_bytes(mail.raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _by_address(world: World) -> dict[str, EmailMessage]:
    return {mail.to[0]: _message(mail) for mail in world.pipeline.ses.sent}


def _run(world: World, rows: list[dict[str, str]], name: str) -> dict[str, dict[str, str]]:
    batch = world.pipeline.submit_csv(world.csv_file(rows, name=name))
    world.pipeline.run_until_done(batch, timeout_s=180)
    result = world.pipeline.result(batch, world.tmp / "out")
    return {r["email"]: r for r in result.rows}


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_each_person_is_mailed_in_their_language_and_a_broken_upload_keeps_the_last(
    make_world,
) -> None:
    world = make_world(email=True)
    _upload(world, PROGRAM_FOLDER, PROGRAM_TEMPLATE)
    _upload(world, GERMAN_FOLDER, GERMAN_TEMPLATE)
    rows = [
        {"email": "anna@acme.example", "first_name": "Anna", "program_name": SPRING,
         "language": "de"},
        {"email": "ben@acme.example", "first_name": "Ben", "program_name": SPRING,
         "language": ""},
        {"email": "chloe@acme.example", "first_name": "Chloé", "program_name": SPRING,
         "language": "fr"},  # no fr/ folder: the program's own template
        {"email": "dora@acme.example", "first_name": "Dora", "program_name": CLOUD,
         "language": "de"},  # no template for this program: the shipped default
    ]  # fmt: skip
    results = _run(world, rows, "cohort.csv")
    assert {r["status"] for r in results.values()} == {"assigned"}
    assert results["anna@acme.example"]["language"] == "de"  # the column stays in the results
    mails = _by_address(world)
    assert set(mails) == {r["email"] for r in rows}

    anna = mails["anna@acme.example"]
    assert anna["Subject"] == f"Ihr Gutschein für {SPRING}"
    assert f"Hallo Anna, Ihr Code: {results['anna@acme.example']['voucher_code']}" in _text(anna)
    for person, name in (("ben", "Ben"), ("chloe", "Chloé")):
        mail = mails[f"{person}@acme.example"]
        assert mail["Subject"] == f"Spring voucher for {name}"
        assert results[f"{person}@acme.example"]["voucher_code"] in _text(mail)
    dora = mails["dora@acme.example"]
    assert dora["Subject"] == f"Your exam voucher for {CLOUD}"
    assert "Here is your exam voucher" in _text(dora)

    # The input's language for rows without the column: object metadata, an HR request.
    batch = world.pipeline.submit_csv(
        world.csv_file(
            [{"email": "fritz@acme.example", "first_name": "Fritz", "program_name": SPRING}],
            name="meta.csv",
        ),
        metadata={"language": "de"},
    )
    world.pipeline.run_until_done(batch, timeout_s=180)
    request = world.pipeline.submit_request({
        "requestId": "templates-hr-1", "partnerName": PARTNER, "programName": SPRING,
        "language": "de", "recipients": [{"email": "greta@acme.example", "firstName": "Greta"},
                                         {"email": "hugo@acme.example", "language": "en"}],
    })  # fmt: skip
    assert request is not None
    world.pipeline.run_until_done(request, timeout_s=180)
    mails = _by_address(world)
    assert mails["fritz@acme.example"]["Subject"] == f"Ihr Gutschein für {SPRING}"
    assert mails["greta@acme.example"]["Subject"] == f"Ihr Gutschein für {SPRING}"
    assert mails["hugo@acme.example"]["Subject"] == "Spring voucher for"  # en: no en/ folder

    # A broken upload of the German body: answered next to its folder, the last one kept.
    _upload(world, GERMAN_FOLDER, {"body.txt": "Hallo {{ vorname }}, {{ voucher_code }}\n"})
    s3 = world.pipeline.stack.client("s3")
    error_key = f"templates/{PARTNER}/{SPRING}/de.error.json"
    error = json.loads(s3.get_object(Bucket=world.pipeline.bucket, Key=error_key)["Body"].read())
    assert error["problems"][0]["file"] == "body.txt"
    assert error["problems"][0]["line"] == 1
    assert "unknown variable 'vorname'" in error["problems"][0]["problem"]
    assert "first_name" in error["allowedVariables"]

    results = _run(
        world,
        [
            {
                "email": "emil@acme.example",
                "first_name": "Emil",
                "program_name": SPRING,
                "language": "DE",
            }
        ],
        "later.csv",
    )
    emil = _by_address(world)["emil@acme.example"]
    assert emil["Subject"] == f"Ihr Gutschein für {SPRING}"
    assert f"Hallo Emil, Ihr Code: {results['emil@acme.example']['voucher_code']}" in _text(emil)
