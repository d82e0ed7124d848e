"""Hostile-input catalogue: every case goes through the whole local pipeline (S3 upload or the
request queue → handlers → results) and is held to its answer in DESIGN.md's bad-input table:

* a bad row is ``rejected`` with its reason and the rest proceed;
* an unusable file or request buys nothing and ``results/…`` says why;
* a callback to anything but a public HTTPS address is refused, the batch still completes;
* nothing ever escapes ``results/``, nothing is lost, nothing bought twice (``tests/invariants``).

One stack and one sandbox serve the whole module (each case has its own key or requestId).
"""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from voucher_distributor.domain.batches import csv_batch_id
from voucher_distributor.domain.results_csv import FORMULA_PREFIXES
from voucher_distributor.models.ledger import BatchStatus
from voucher_distributor_cli.local.results import RunResult
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

from ..invariants import batch_purchases, consistency_violations

TOKEN = "hostile-token"
SPRING = "Spring Certification Drive"
MAX_CSV_BYTES = 50 * 1024 * 1024


@dataclass
class Env:
    sandbox: SandboxServer
    pipeline: LocalPipeline
    tmp: Path
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hostile")
    log_path = tmp / "handlers.log"
    with (
        log_path.open("a", encoding="utf-8") as log,
        SandboxServer(
            SandboxConfig(token=TOKEN, generation_delay_s=0.0, seed=3), host="127.0.0.1", port=0
        ) as sandbox,
        LocalPipeline(
            certiverse_url=sandbox.base_url,
            certiverse_token=TOKEN,
            default_partner="Acme Corp",
            default_program=SPRING,
            log_stream=log,
            # The deployed callback rules: local runs otherwise let callbacks reach loopback.
            tuning={
                "INITIAL_CHECK_SECONDS": "0.5",
                "MAX_CSV_BYTES": str(MAX_CSV_BYTES),
                "CALLBACK_ALLOW_LOOPBACK": "false",
            },
        ) as pipeline,
    ):
        yield Env(sandbox, pipeline, tmp, log_path)


def upload(env: Env, data: bytes, key: str) -> RunResult:
    path = env.tmp / "upload.bin"
    path.write_bytes(data)
    batch_id = env.pipeline.submit_csv(path, key=key)
    env.pipeline.run_until_done(batch_id, timeout_s=120)
    return env.pipeline.result(batch_id)


def request(env: Env, body: dict[str, Any] | str) -> RunResult | None:
    """The request's results, or None when it was refused at the door (no batch at all)."""
    batch_id = env.pipeline.submit_request(body)
    env.pipeline.run_until_idle(timeout_s=60)
    if batch_id is None or env.pipeline.ledger.batches.get_batch(batch_id) is None:
        return None
    env.pipeline.run_until_done(batch_id, timeout_s=60)
    env.pipeline.run_until_idle(timeout_s=60)
    return env.pipeline.result(batch_id)


def consistent(env: Env, result: RunResult) -> None:
    problems = consistency_violations(env.pipeline.ledger, env.sandbox, result, whole_sandbox=False)
    assert not problems, problems


def refused(env: Env, result: RunResult, *words: str) -> None:
    """Nothing bought; the input rejected (the sender's to fix: issue 25); the summary under
    results/ says why."""
    assert result.summary["status"] == "rejected"
    assert result.summary["results"]["summary"].startswith("results/")
    assert batch_purchases(env.sandbox.purchases(), result.batch_id) == []
    error = (result.summary["error"] or "").lower()
    for word in words:
        assert word.lower() in error, result.summary["error"]
    assert env.pipeline.ledger.batches.get_batch(result.batch_id).status == BatchStatus.FAILED


def invalid_requests(env: Env) -> dict[str, dict[str, Any]]:
    s3 = env.pipeline.stack.client("s3")
    listed = s3.list_objects_v2(Bucket=env.pipeline.bucket, Prefix="results/requests/invalid/")
    return {
        o["Key"]: json.loads(s3.get_object(Bucket=env.pipeline.bucket, Key=o["Key"])["Body"].read())
        for o in listed.get("Contents", [])
    }


# ---------------------------------------------------------------------- CSV files


def csv_text(*lines: str, end: str = "\r\n") -> str:
    return end.join(lines) + end


@dataclass
class Case:
    """One hostile file and the answer it must get."""

    id: str
    data: bytes
    #: expected status of each result row, in order; None when the whole file is refused
    statuses: list[str] | None = None
    #: the refusal (words the summary's error must hold) when ``statuses`` is None
    error: tuple[str, ...] = ()
    #: row number -> words its reason must hold
    reasons: dict[int, str] = field(default_factory=dict)
    check: Callable[[RunResult], None] | None = None
    key: str = ""


def _cell(column: str, row: int, expected: str) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        assert result.rows[row][column] == expected, result.rows[row][column]

    return check


def _inert(column: str, row: int) -> Callable[[RunResult], None]:
    """The cell cannot run as a formula: neutralised with ``'`` (or its trigger trimmed)."""

    def check(result: RunResult) -> None:
        cell = result.rows[row][column]
        assert cell.startswith("'") or not cell.startswith(FORMULA_PREFIXES), repr(cell)
        assert cell.lstrip("'").strip().endswith("cmd")

    return check


NAMES = "email,first_name"
CSV_CASES = [
    Case("utf8-bom", b"\xef\xbb\xbf" + csv_text(NAMES, "bom@acme.example,Zoë").encode(),
         ["assigned"], check=_cell("first_name", 0, "Zoë")),
    Case("utf16-le-bom", csv_text(NAMES, "u16le@acme.example,Zoë").encode("utf-16"),
         ["assigned"], check=_cell("first_name", 0, "Zoë")),
    Case("utf16-be-bom", codecs.BOM_UTF16_BE + csv_text(NAMES, "u16be@acme.example,Zoë")
         .encode("utf-16-be"), ["assigned"], check=_cell("first_name", 0, "Zoë")),
    Case("latin1", csv_text(NAMES, "latin@acme.example,Zoë Müller").encode("latin-1"),
         ["assigned"], check=_cell("first_name", 0, "Zoë Müller")),
    Case("windows-1252", csv_text(NAMES, "cp@acme.example,“Ann” Ö").encode("cp1252"),
         ["assigned"], check=_cell("first_name", 0, "“Ann” Ö")),
    Case("crlf", csv_text(NAMES, "crlf1@acme.example,A", "crlf2@acme.example,B").encode(),
         ["assigned", "assigned"]),
    Case("lf-only", csv_text(NAMES, "lf1@acme.example,A", "lf2@acme.example,B", end="\n")
         .encode(), ["assigned", "assigned"]),
    Case("lone-cr", csv_text(NAMES, "cr1@acme.example,A", "cr2@acme.example,B", end="\r")
         .encode(), ["assigned", "assigned"], check=_cell("first_name", 1, "B")),
    Case("embedded-newlines", csv_text(NAMES, 'nl@acme.example,"Ann\nMarie, Jr."').encode(),
         ["assigned"], check=_cell("first_name", 0, "Ann\nMarie, Jr.")),
    Case("missing-header", csv_text("nohead1@acme.example,Ann", "nohead2@acme.example,Bob")
         .encode(), None, error=("header",)),
    Case("duplicate-email-column", csv_text("email,E-Mail", "d@acme.example,d@acme.example")
         .encode(), None, error=("both name the email field",)),
    Case("duplicate-unknown-columns", csv_text("email,dept,dept", "dup@acme.example,A,B").encode(),
         ["assigned"], check=lambda r: (r.rows[0]["dept"], r.rows[0]["dept (2)"]) == ("A", "B")),
    Case("unknown-columns-travel", csv_text("Team,E-Mail Address,Cost Centre",
         "Blue,alias@acme.example,CC-9").encode(), ["assigned"],
         check=_cell("Cost Centre", 0, "CC-9")),
    Case("empty-file", b"", None, error=("empty",)),
    Case("whitespace-only", b" \r\n\r\n  \r\n", None, error=("empty",)),
    Case("header-only", csv_text(NAMES).encode(), None, error=("no ",)),
    Case("blank-rows-between", csv_text(NAMES, "b1@acme.example,A", ",", "", "b2@acme.example,B")
         .encode(), ["assigned", "assigned"]),
    Case("field-1mb", csv_text("email,notes", "big@acme.example," + "x" * 1_000_000,
         "small@acme.example,ok").encode(), ["rejected", "assigned"], reasons={0: "long"}),
    Case("cell-20k", csv_text(NAMES, "wide@acme.example," + "y" * 20_000, "ok20@acme.example,A")
         .encode(), ["rejected", "assigned"], reasons={0: "long"}),
    *(
        Case(f"formula-{name}", csv_text(NAMES, f'f{name}@acme.example,"{prefix}cmd"').encode(),
             ["assigned"], check=_inert("first_name", 0))
        for name, prefix in [("equals", "="), ("plus", "+"), ("minus", "-"), ("at", "@"),
                             ("tab", "\t"), ("cr", "\r")]
    ),
    Case("formula-in-email", csv_text(NAMES, "=cmd@acme.example,A").encode(), ["assigned"],
         check=_cell("email", 0, "'=cmd@acme.example")),
    Case("unicode-local-part", csv_text(NAMES, "josé@acme.example,J", "jose@acme.example,J")
         .encode(), ["rejected", "assigned"], reasons={0: "malformed"}),
    Case("idn-domain-unicode", csv_text(NAMES, "a@bücher.example,A").encode(), ["rejected"],
         reasons={0: "malformed"}),
    Case("idn-domain-punycode", csv_text(NAMES, "a@xn--bcher-kva.example,A").encode(),
         ["assigned"]),
    Case("plus-addresses", csv_text(NAMES, "p+hr@acme.example,A", "p@acme.example,B",
         "P+HR@ACME.EXAMPLE,C").encode(), ["assigned", "assigned", "rejected"],
         reasons={2: "duplicate"}),
    Case("case-duplicate", csv_text(NAMES, "Q@Acme.Example,A", "q@acme.example,B").encode(),
         ["assigned", "rejected"], reasons={1: "duplicate"}),
    Case("malformed-and-empty-email", csv_text(NAMES, "not-an-email,A", ",B", "ok@acme.example,C")
         .encode(), ["rejected", "rejected", "assigned"], reasons={0: "malformed"}),
    Case("binary", bytes(range(256)) * 8, None, error=("csv",)),
    Case("gzip-named-csv", gzip.compress(csv_text(NAMES, "gz@acme.example,A").encode()), None,
         error=("gzip",)),
    Case("xlsx-named-csv", b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 64, None, error=("xlsx",)),
    Case("pdf-named-csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", None, error=("pdf",)),
    Case("utf32", csv_text(NAMES, "u32@acme.example,A").encode("utf-32"), None, error=("utf-32",)),
    Case("semicolon", csv_text("email;first_name", "semi@acme.example;A").encode(), ["assigned"]),
    Case("tab-separated", csv_text("email\tfirst_name", "tab@acme.example\tA").encode(),
         ["assigned"]),
    Case("excel-sep-line", csv_text("sep=;", "email;first_name", "sep@acme.example;A").encode(),
         ["assigned"]),
    Case("unclosed-quote", csv_text(NAMES, "q1@acme.example,A", 'q2@acme.example,"B',
         "q3@acme.example,C").encode(), ["assigned", "rejected"], reasons={1: "quote"}),
    Case("cells-beyond-header", csv_text(NAMES, "extra@acme.example,A,surprise",
         "fine@acme.example,B").encode(), ["rejected", "assigned"]),
    Case("key-with-spaces", csv_text(NAMES, "sp@acme.example,A").encode(), ["assigned"],
         key="incoming/HR exports/Nov list (final).csv",
         check=lambda r: r.summary["results"]["csv"]
         == f"results/HR exports/Nov list _final_.{r.batch_id[:14]}.results.csv"),
    Case("key-with-unicode", csv_text(NAMES, "uk@acme.example,A").encode(), ["assigned"],
         key="incoming/équipe/liste ñ.csv",
         check=lambda r: r.summary["results"]["csv"].startswith("results/")),
    Case("key-with-dotdot", csv_text(NAMES, "dd@acme.example,A").encode(), ["assigned"],
         key="incoming/../../work/evil/../x.csv",
         check=lambda r: r.summary["results"]["csv"]
         == f"results/work/evil/x.{r.batch_id[:14]}.results.csv"),
]  # fmt: skip


@pytest.mark.parametrize("case", CSV_CASES, ids=[c.id for c in CSV_CASES])
def test_hostile_csv(env: Env, case: Case) -> None:
    result = upload(env, case.data, case.key or f"incoming/hostile/{case.id}.csv")
    consistent(env, result)
    if case.statuses is None:
        refused(env, result, *case.error)
        return
    assert result.summary["status"] == "completed", result.summary
    assert [r["status"] for r in result.rows] == case.statuses
    for row, words in case.reasons.items():
        assert words in result.rows[row]["reason"].lower(), result.rows[row]["reason"]
    bought = batch_purchases(env.sandbox.purchases(), result.batch_id)
    assert len(bought) == (1 if "assigned" in case.statuses else 0)
    for key in (result.summary["results"]["csv"], result.summary["results"]["summary"]):
        assert key.startswith("results/")
        assert ".." not in key.split("/")
    if case.check is not None:
        assert case.check(result) is not False


def broken_after(good_rows: int) -> bytes:
    """UTF-8 (decided by an early 'ü'), then, past the first 256 KiB read, a byte it cannot hold."""
    filler = "".join(f"mid{n}@acme.example,Plain\r\n" for n in range(good_rows))
    return (
        f"{NAMES}\r\nfirst@acme.example,Müller\r\n{filler}".encode()
        + b"last@acme.example,M\xfcller\r\n"
    )


def test_hostile_file_breaking_after_full_chunks_buys_nothing_and_leaves_nothing(
    env: Env,
) -> None:
    """12,000 good rows (12 chunks planned), then damage: refused whole, no stray chunks."""
    result = upload(env, broken_after(12_000), "incoming/hostile/broken-midway.csv")
    refused(env, result, "after data row", "not valid utf-8")
    assert result.summary["purchases"] == []
    assert list(env.pipeline.ledger.chunks.iter_chunks(result.batch_id)) == []
    consistent(env, result)


def test_hostile_file_of_100_mb_is_refused_unread(env: Env) -> None:
    """Over the size limit (50 MB here, 200 MB deployed): refused before a byte is parsed."""
    line = b"someone.with.a.long.address@acme.example,First,Last\r\n"
    data = b"email,first_name,last_name\r\n" + line * (100 * 1024 * 1024 // len(line) + 1)
    assert len(data) > 100 * 1024 * 1024
    result = upload(env, data, "incoming/hostile/huge-100mb.csv")
    refused(env, result, "limit")


@pytest.mark.slow
def test_hostile_million_rows_stream_in_flat_memory() -> None:
    """1,000,000 rows are read as a stream: the reader never holds the file (peak < 20 MB)."""
    import tracemalloc

    from voucher_distributor.domain.csv_input import read_rows

    def blocks() -> Iterator[bytes]:
        yield b"email,first_name\r\n"
        for start in range(0, 1_000_000, 10_000):
            yield "".join(
                f"m{n}@acme.example,N{n}\r\n" for n in range(start, start + 10_000)
            ).encode()

    tracemalloc.start()
    try:
        count = 0
        last = None
        for row in read_rows(blocks()):
            count += 1
            last = row
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 1_000_000
    assert last is not None
    assert last.row_number == 1_000_000
    assert last.problem is None
    assert peak < 20 * 1024 * 1024, peak


# ---------------------------------------------------------------------- S3 notifications


def test_hostile_s3_test_event_is_dropped(env: Env) -> None:
    sqs = env.pipeline.stack.client("sqs")
    before = env.sandbox.purchases()
    sqs.send_message(
        QueueUrl=env.pipeline.queue_url("UploadQueue"),
        MessageBody=json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent",
                                "Bucket": env.pipeline.bucket}),
    )  # fmt: skip
    env.pipeline.run_until_idle(timeout_s=30)
    assert env.sandbox.purchases() == before
    dlq = env.pipeline.queue_url("UploadDeadLetterQueue")
    assert env.pipeline.stack.queue_counts(dlq).total == 0


@pytest.mark.parametrize("key", ["results/sneaky.csv", "incoming/notes.txt", "work/x/y.csv"])
def test_hostile_s3_event_outside_incoming_csv_is_ignored(env: Env, key: str) -> None:
    s3 = env.pipeline.stack.client("s3")
    s3.put_object(Bucket=env.pipeline.bucket, Key=key, Body=b"email\r\nz@acme.example\r\n")
    env.pipeline.run_until_idle(timeout_s=30)
    head = s3.head_object(Bucket=env.pipeline.bucket, Key=key)
    version = head.get("VersionId") or head["ETag"].strip('"')
    assert (
        env.pipeline.ledger.batches.get_batch(csv_batch_id(env.pipeline.bucket, key, version))
        is None
    )


# ---------------------------------------------------------------------- HR requests


def recipients(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"email": f"{prefix}{n}@acme.example"} for n in range(count)]


REFUSED_REQUESTS: list[tuple[str, str | dict[str, Any], str]] = [
    ("not-json", "{this is not json", "(body)"),
    ("json-array", json.dumps([{"requestId": "x"}]), "(body)"),
    ("missing-request-id", {"programName": SPRING, "recipients": recipients("m", 1)}, "requestId"),
    ("request-id-number", {"requestId": 42, "recipients": recipients("n", 1)}, "requestId"),
    ("request-id-empty", {"requestId": "", "recipients": recipients("e", 1)}, "requestId"),
    ("request-id-too-long", {"requestId": "r" * 201, "recipients": recipients("l", 1)},
     "requestId"),
    ("recipients-string", {"requestId": "rs-1", "recipients": "a@acme.example"}, "recipients"),
    ("recipient-email-number", {"requestId": "rn-1", "recipients": [{"email": 12345}]},
     "recipients[0].email"),
    ("recipient-missing-email", {"requestId": "rm-1", "recipients": [{"firstName": "A"}]},
     "recipients[0].email"),
    # Issue 25 (7): only a JSON boolean is a dry run; "yes" is never taken as true.
    ("dry-run-string", {"requestId": "dr-yes", "dryRun": "yes",
     "recipients": recipients("d", 1)}, "dryRun"),
    ("partner-name-object", {"requestId": "po-1", "partnerName": {"$ne": 1},
     "recipients": recipients("p", 1)}, "partnerName"),
    ("callback-http", {"requestId": "cb-http", "callbackUrl": "http://hooks.example/x",
     "recipients": recipients("h", 1)}, "callbackUrl"),
    ("s3-uri-not-s3", {"requestId": "s3-bad", "recipientsS3Uri": "https://evil.example/x.csv"},
     "recipientsS3Uri"),
    # Issue 23 item 3: a request that names nobody is refused whole at the door.
    ("no-recipients-at-all", {"requestId": "nobody-1", "programName": "Spring"}, "recipients"),
    ("recipients-empty", {"requestId": "nobody-2", "programName": "Spring", "recipients": []},
     "recipients"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field_name"),
    [(body, name) for _, body, name in REFUSED_REQUESTS],
    ids=[case_id for case_id, _, _ in REFUSED_REQUESTS],
)
def test_hostile_request_is_refused_at_the_door(
    env: Env, body: str | dict[str, Any], field_name: str
) -> None:
    before = set(invalid_requests(env))
    purchases = len(env.sandbox.purchases())
    assert request(env, body) is None
    new = {k: v for k, v in invalid_requests(env).items() if k not in before}
    assert len(new) == 1, new
    (answer,) = new.values()
    assert answer["status"] == "refused"
    assert field_name in {p["field"] for p in answer["problems"]}, answer["problems"]
    assert len(env.sandbox.purchases()) == purchases
    dlq = env.pipeline.queue_url("RequestDeadLetterQueue")
    assert env.pipeline.stack.queue_counts(dlq).total == 0


def test_hostile_oversized_inline_list_is_refused(env: Env) -> None:
    result = request(env, {"requestId": "huge-inline", "programName": SPRING,
                           "recipients": recipients("big", 1001)})  # fmt: skip
    assert result is not None
    refused(env, result, "1,001 inline recipients", "recipientsS3Uri")


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("s3://someone-elses-bucket/list.csv", ("inbox bucket",)),
        ("s3://{inbox}/requests/does-not-exist.csv", ("does not exist",)),
        ("s3://{inbox}/", ("inbox bucket",)),
    ],
    ids=["other-bucket", "missing-object", "no-key"],
)
def test_hostile_recipients_uri_is_refused(env: Env, uri: str, words: tuple[str, ...]) -> None:
    request_id = f"uri-{uri.rsplit('/', maxsplit=1)[-1] or 'none'}-{len(uri)}"
    result = request(env, {"requestId": request_id, "programName": SPRING,
                           "recipientsS3Uri": uri.format(inbox=env.pipeline.bucket)})  # fmt: skip
    assert result is not None
    refused(env, result, *words)


def test_hostile_request_with_bad_and_duplicate_recipients(env: Env) -> None:
    result = request(env, {"requestId": "mixed-rows", "programName": SPRING, "recipients": [
        {"email": "Good@Acme.Example"}, {"email": "good@acme.example"}, {"email": "bad@@x"},
        {"email": "  spaced@acme.example  ", "firstName": "=HYPERLINK(\"x\")"},
    ]})  # fmt: skip
    assert result is not None
    consistent(env, result)
    assert [r["status"] for r in result.rows] == ["assigned", "rejected", "rejected", "assigned"]
    assert result.rows[3]["first_name"].startswith("'=")


CALLBACK_TARGETS = [
    ("localhost", "https://localhost/hook"),
    ("loopback", "https://127.0.0.1:8443/hook"),
    ("private-10", "https://10.1.2.3/hook"),
    ("private-192", "https://192.168.1.10/hook"),
    ("link-local-metadata", "https://169.254.169.254/latest/meta-data/"),
    ("ipv6-loopback", "https://[::1]/hook"),
    ("ipv4-mapped-ipv6", "https://[::ffff:169.254.169.254]/hook"),
    ("credentials-in-url", "https://user:secret@localhost/hook"),
]


@pytest.mark.parametrize(("name", "url"), CALLBACK_TARGETS, ids=[i for i, _ in CALLBACK_TARGETS])
def test_hostile_callback_target_is_refused_and_the_batch_completes(
    env: Env, name: str, url: str
) -> None:
    result = request(env, {"requestId": f"cb-{name}", "programName": SPRING, "callbackUrl": url,
                           "recipients": recipients(f"cb-{name}-", 2)})  # fmt: skip
    assert result is not None
    consistent(env, result)
    assert result.summary["status"] == "completed"
    assert result.summary["counts"]["assigned"] == 2
    log = env.log_text()
    refusal = next(
        line for line in log.splitlines() if f"callback of batch {result.batch_id}" in line
    )
    assert "refused" in refusal or "credentials" in refusal or "non-public" in refusal
    assert "secret" not in refusal
