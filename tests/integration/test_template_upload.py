"""The template check on moto: an upload under templates/ reaches CheckTemplateFunction through
the bucket's S3 notification and its queue (the local runner, as deployed), and is accepted
into the ledger or answered by templates/<folder>.error.json with the previous one kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from voucher_distributor.domain.email_message import TEMPLATE_VARIABLES
from voucher_distributor_cli.local.run import LocalPipeline

FOLDER = "Acme Corp/Spring Certification Drive/de"
PREFIX = f"templates/{FOLDER}/"
ERROR_KEY = f"templates/{FOLDER}.error.json"
GOOD = {
    "subject.txt": "Ihr Prüfungsgutschein für {{ program }}",
    "body.txt": "Hallo {{ first_name }},\n\nIhr Code: {{ voucher_code }}\n",
    "body.html": "<p>Hallo {{ first_name }},</p>\n<p>Ihr Code: <b>{{ voucher_code }}</b></p>\n",
}


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    # No Certiverse is needed: the template check never calls it.
    with LocalPipeline(certiverse_url="http://127.0.0.1:9", certiverse_token="unused") as local:
        yield local


def _put(pipeline: LocalPipeline, files: dict[str, str], prefix: str = PREFIX) -> None:
    s3 = pipeline.stack.client("s3")
    for name, text in files.items():
        s3.put_object(Bucket=pipeline.bucket, Key=prefix + name, Body=text.encode("utf-8"))
    pipeline.run_until_idle(timeout_s=30)


def _error(pipeline: LocalPipeline, key: str = ERROR_KEY) -> dict[str, Any] | None:
    s3 = pipeline.stack.client("s3")
    try:
        body = s3.get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    document: dict[str, Any] = json.loads(body)
    return document


def test_a_complete_folder_is_accepted_and_a_broken_one_keeps_it(pipeline):
    templates = pipeline.ledger.templates
    # One file at a time, as a person uploads: the folder is answered until it is complete.
    _put(pipeline, {"subject.txt": GOOD["subject.txt"]})
    waiting = _error(pipeline)
    assert waiting is not None
    assert {p["file"] for p in waiting["problems"]} == {"body.txt", "body.html"}
    assert templates.get_accepted(FOLDER) is None
    _put(pipeline, {"body.txt": GOOD["body.txt"], "body.html": GOOD["body.html"]})
    accepted = templates.get_accepted(FOLDER)
    assert accepted is not None
    assert accepted.template.subject == GOOD["subject.txt"]
    assert set(accepted.versions) == set(GOOD)
    assert _error(pipeline) is None  # the answer is removed once the folder passes

    # An unknown variable on line 2: refused, answered next to the folder, the last one kept.
    _put(pipeline, {"body.html": "<p>Hallo {{ first_name }}</p>\n<p>{{ vouchercode }}</p>\n"})
    error = _error(pipeline)
    assert error is not None
    assert error["accepted"] is False
    assert error["template"] == PREFIX
    assert error["problems"] == [
        {"file": "body.html", "line": 2, "problem": error["problems"][0]["problem"]}
    ]
    assert "unknown variable 'vouchercode'" in error["problems"][0]["problem"]
    assert error["allowedVariables"] == list(TEMPLATE_VARIABLES)
    assert "accepted at" in error["inUse"]
    still = templates.get_accepted(FOLDER)
    assert still is not None
    assert still.template.html == GOOD["body.html"]

    # Fixed: accepted again, the answer gone.
    _put(pipeline, {"body.html": "<p>Hallo {{ first_name }}: {{ voucher_code }}</p>\n"})
    fixed = templates.get_accepted(FOLDER)
    assert fixed is not None
    assert fixed.template.html == "<p>Hallo {{ first_name }}: {{ voucher_code }}</p>\n"
    assert _error(pipeline) is None


def test_a_template_that_fails_to_render_is_refused_without_an_accepted_one(pipeline):
    folder = "default/fr"
    _put(
        pipeline,
        {**GOOD, "body.txt": "{% for exam in exams %}{{ exam.price }}{% endfor %}\n"},
        prefix=f"templates/{folder}/",
    )
    error = _error(pipeline, f"templates/{folder}.error.json")
    assert error is not None
    assert error["problems"][0]["file"] == "body.txt"
    assert "sample data" in error["problems"][0]["problem"]
    assert "none accepted" in error["inUse"]
    assert pipeline.ledger.templates.get_accepted(folder) is None


def test_other_objects_under_templates_change_nothing(pipeline):
    _put(pipeline, {"README.md": "notes"}, prefix="templates/default/")
    _put(pipeline, {"subject.txt": "{{ program }}"}, prefix="templates/Just A Partner/")
    s3 = pipeline.stack.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=pipeline.bucket, Prefix="templates/")
            .get("Contents", [])}  # fmt: skip
    assert not any(k.endswith(".error.json") and "Just A Partner" in k for k in keys)
    assert pipeline.ledger.templates.get_accepted("default") is None
