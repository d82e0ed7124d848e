"""The ``local run`` command: its inputs (CSVs, HR request JSONs) sent to one local pipeline, in
order or together, each waited for at the door and to its end, and its results copied out."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from voucher_distributor_cli.local.defaults import SANDBOX_TOKEN
from voucher_distributor_cli.local.results import RunResult
from voucher_distributor_cli.local.run import LocalPipeline, LocalRunError
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer


def run_files(
    paths: list[Path],
    *,
    partner: str | None,
    program: str | None,
    certiverse_url: str | None,
    out_dir: Path,
    timeout_s: float,
    show: TextIO,
    together: bool = False,
    seed: int | None = None,
    dry_run: bool = False,
    parameters: dict[str, str] | None = None,
    state: Path | None = None,
    send_email: bool = True,
    send_at: str | None = None,
) -> list[RunResult]:
    """Run CSVs (and HR request JSONs) through one local pipeline, end to end.

    In order, each input to its end before the next is sent; with ``together`` all are sent
    at once and run side by side (two lists of the same people arriving in the same second).
    One result per input, in input order, each with its own copies in ``out_dir``. The
    built-in sandbox draws its codes afresh each run unless ``seed`` is given.

    Each run is a new stack, unless ``state`` names a directory: the ledger, the bucket and
    the sandbox's sales of the run before are loaded from it at the start and written to it
    at the end (``local/state.py``), so a person sent again is ``existing``.
    The stack mails each assigned code from a local sender (every message under
    ``out_dir/mail/``) unless ``parameters`` set ``SenderEmail`` (empty: no e-mail);
    ``send_email=False`` makes each input opt out instead (``--no-email``); ``send_at`` (ISO
    8601 with an offset) makes each input's e-mails wait until then (``--send-at``).
    """
    from voucher_distributor_cli.local import state as kept  # noqa: PLC0415

    for path in paths:
        if not path.is_file():
            raise LocalRunError(f"{path}: no such file")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "local-run.log"
    with contextlib.ExitStack() as stack:
        sandbox: SandboxServer | None = None
        if certiverse_url is None:
            data = kept.sandbox_data(state) if state is not None else None
            sandbox = SandboxServer(
                SandboxConfig(
                    token=SANDBOX_TOKEN, generation_delay_s=2.0, seed=seed, data_path=data
                ),
                host="127.0.0.1",
                port=0,
            )
            stack.enter_context(sandbox)
            url, token = sandbox.base_url, SANDBOX_TOKEN
            print(f"Certiverse sandbox on {url}", file=show)
        else:
            url, token = certiverse_url, os.environ.get("CERTIVERSE_TOKEN", "")
            if not token:
                raise LocalRunError("--certiverse-url needs the API token in CERTIVERSE_TOKEN")
        log_file = stack.enter_context(log_path.open("w", encoding="utf-8"))
        pipeline = stack.enter_context(
            LocalPipeline(
                certiverse_url=url,
                certiverse_token=token,
                default_partner=partner or "",
                default_program=program or "",
                log_stream=log_file,
                parameters=parameters,
                email=True,
                mail_dir=out_dir / "mail",
            )
        )
        print(
            f"AWS emulation (moto) on {pipeline.stack.endpoint_url}; logs in {log_path}", file=show
        )
        if state is not None:
            loaded = kept.restore(state, pipeline.stack)
            print(
                f"state {state}: {loaded['ledgerItems']:,} ledger items and "
                f"{loaded['objects']:,} objects of earlier runs loaded",
                file=show,
            )
        results = _run_inputs(
            pipeline, paths, partner, program, show, out_dir, timeout_s,
            together=together, dry_run=dry_run, send_email=send_email, send_at=send_at,
        )  # fmt: skip
        if state is not None:
            kept.save(state, pipeline.stack, sandbox)
        return results


def _run_inputs(
    pipeline: LocalPipeline,
    paths: list[Path],
    partner: str | None,
    program: str | None,
    show: TextIO,
    out_dir: Path,
    timeout_s: float,
    *,
    together: bool,
    dry_run: bool,
    send_email: bool = True,
    send_at: str | None = None,
) -> list[RunResult]:
    keys = _upload_keys(paths, together=together)
    if not together:
        # Each result is read as soon as its batch ends: a later upload of the same name
        # writes its results under the same key.
        results = []
        for path, key in zip(paths, keys, strict=True):
            sent = _submit(
                pipeline, path, key, partner, program, show, dry_run=dry_run,
                send_email=send_email, send_at=send_at,
            )  # fmt: skip
            _at_the_door(pipeline, sent, show, timeout_s)
            results.append(_finish(pipeline, sent, out_dir, show, timeout_s))
        return results
    sent_all = [
        _submit(
            pipeline,
            path,
            key,
            partner,
            program,
            show,
            dry_run=dry_run,
            send_email=send_email,
            send_at=send_at,
        )
        for path, key in zip(paths, keys, strict=True)
    ]
    for sent in sent_all:
        _at_the_door(pipeline, sent, show, timeout_s)
    for sent in sent_all:
        if sent.refusal is None and sent.batch_id:
            pipeline.run_until_done(sent.batch_id, timeout_s=timeout_s, show=show)
    return [_finish(pipeline, sent, out_dir, show, timeout_s) for sent in sent_all]


@dataclass
class _Sent:
    """An input handed to the local stack: its batch, or the refusal that ended it at the door."""

    path: Path
    batch_id: str
    message_id: str | None = None  # a request's, until it is taken in or refused
    refusal: dict[str, Any] | None = None


def _finish(
    pipeline: LocalPipeline, sent: _Sent, out_dir: Path, show: TextIO, timeout_s: float
) -> RunResult:
    if sent.refusal is not None:
        copy = _copy_refusal(out_dir, sent.path, sent.refusal)
        return RunResult(
            sent.batch_id, sent.refusal, None, None, input=sent.path, refusal_copy=copy
        )
    pipeline.run_until_done(sent.batch_id, timeout_s=timeout_s, show=show)
    result = pipeline.result(sent.batch_id, out_dir)
    result.input = sent.path
    return result


def _copy_refusal(out_dir: Path, path: Path, refusal: dict[str, Any]) -> Path:
    """``<name>.error.json`` in ``out_dir`` (``<name>-2.error.json`` when that is taken)."""
    number = 1
    while True:
        copy = out_dir / f"{path.stem}{'' if number == 1 else f'-{number}'}.error.json"
        if not copy.exists() or json.loads(copy.read_text(encoding="utf-8")) == refusal:
            break
        number += 1
    copy.write_text(json.dumps(refusal, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return copy


def run_file(path: Path, **kwargs: Any) -> RunResult:
    """``run_files`` for one input."""
    (result,) = run_files([path], **kwargs)
    return result


def _upload_keys(paths: list[Path], *, together: bool) -> list[str | None]:
    """The incoming/ key of each CSV (None for a request). Run in order, a name seen before is
    uploaded again under the same key (a new version, as a user re-uploading would); sent
    together, a repeated name gets a folder of its own so their results never share a key."""
    keys: list[str | None] = []
    seen: Counter[str] = Counter()
    for path in paths:
        if path.suffix.lower() == ".json":
            keys.append(None)
            continue
        seen[path.name] += 1
        folder = f"{seen[path.name]}/" if together and seen[path.name] > 1 else ""
        keys.append(f"incoming/{folder}{path.name}")
    return keys


def _submit(
    pipeline: LocalPipeline,
    path: Path,
    key: str | None,
    partner: str | None,
    program: str | None,
    show: TextIO,
    *,
    dry_run: bool = False,
    send_email: bool = True,
    send_at: str | None = None,
) -> _Sent:
    """Upload a CSV, or send a request (as it is, when it is not even JSON: the request
    handler answers it as the deployed one would). A dry run is asked for as a user would:
    object metadata ``mode: dry-run``, or ``"dryRun": true`` in the request."""
    if key is not None:
        metadata = {
            **({"mode": "dry-run"} if dry_run else {}),
            **({} if send_email else {"send-email": "false"}),
            **({"send-at": send_at} if send_at else {}),
        }
        batch_id = pipeline.submit_csv(path, key=key, metadata=metadata)
        mode = " as a dry run" if dry_run else ""
        print(f"uploaded {path.name} to s3://{pipeline.bucket}/{key}{mode}", file=show)
        return _Sent(path, batch_id)
    body = path.read_text(encoding="utf-8-sig", errors="replace")
    request: dict[str, Any] | str = body
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        # Sent as it is: the request handler answers it as the deployed one would.
        print(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", file=show
        )
    else:
        if isinstance(parsed, dict):
            if partner and not parsed.get("partnerName"):
                parsed["partnerName"] = partner
            if program and not parsed.get("programName"):
                parsed["programName"] = program
            if dry_run:
                parsed["dryRun"] = True
            if not send_email:
                parsed["sendEmail"] = False
            if send_at:
                parsed["sendAt"] = send_at
            request = parsed
    message_id, request_batch = pipeline.send_request(request)
    print(f"request {path.name} sent to the request queue", file=show)
    return _Sent(path, request_batch or "", message_id)


def _at_the_door(pipeline: LocalPipeline, sent: _Sent, show: TextIO, timeout_s: float) -> None:
    """Wait for the request handler to take a request in or refuse it (well under a second):
    a refused request never becomes a batch to wait for."""
    if sent.message_id is None:
        return
    sent.refusal = pipeline.wait_for_door(
        sent.message_id, sent.batch_id or None, timeout_s=timeout_s
    )
    if sent.refusal is not None:
        problems = sent.refusal.get("problems", [])
        print(
            f"{sent.path}: refused, nothing was bought "
            f"({len(problems)} problem{'' if len(problems) == 1 else 's'})",
            file=show,
        )
