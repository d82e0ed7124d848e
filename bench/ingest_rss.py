# ruff: noqa: S603 - the benchmark runs its own interpreter
"""Streaming ingest: peak RSS of one ingest invocation, 1,000,000 rows against 10,000.

The measured process holds only what the ingest Lambda holds: a fresh interpreter that builds
the pipeline's services from the function's environment and runs ``upload_request`` + ``ingest``
(the IngestCsvFunction's record handler minus Powertools) on a CSV already in the bucket. The AWS
emulation (moto) and the Certiverse sandbox run in the parent process, reached over loopback
through AWS_ENDPOINT_URL and CERTIVERSE_BASE_URL, so their memory is not counted. Peak RSS is
the child's ``VmHWM`` (/proc/self/status) at the end: the high-water mark of its own address
space. Not ``getrusage().ru_maxrss``: on Linux that survives ``execve`` and so reports the
*parent's* size at the moment it forked the child (the parent holds moto's copy of the CSV),
which made the first figures of this benchmark grow with the file while the ingest did not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.workload import PARTNER, write_csv

TOKEN = "bench-token"  # noqa: S105 - the local sandbox's throwaway token


def child(key: str, version: str) -> None:
    """Runs in the measured process (``python -m bench.ingest_rss KEY VERSION``)."""
    import time  # noqa: PLC0415

    from bench.aws_calls import counting_dynamodb_writes  # noqa: PLC0415
    from voucher_distributor.pipeline.context import build_services  # noqa: PLC0415
    from voucher_distributor.pipeline.ingest import ingest  # noqa: PLC0415
    from voucher_distributor.pipeline.sources import upload_request  # noqa: PLC0415
    from voucher_distributor.settings import get_settings  # noqa: PLC0415

    services = build_services(get_settings())
    request = upload_request(services, key, version or None)
    assert request is not None, "the uploaded CSV is missing"
    with counting_dynamodb_writes() as counter:
        started = time.perf_counter()
        cpu = time.process_time()
        outcome = ingest(services, request)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
    peak_kib = _high_water_mark_kib()
    print(
        json.dumps(
            {"rows": outcome.rows, "chunks": outcome.chunks, "rejected": outcome.rejected,
             "seconds": elapsed, "cpu_seconds": cpu_s, "aws_call_seconds": counter.aws_call_s,
             "calls": dict(counter.calls), "dynamodb_item_writes": counter.items,
             "peak_rss_mib": peak_kib / 1024}
        )
    )  # fmt: skip


#: Assumed per-call latency in AWS (same region, warm connections), in seconds. Medians of what
#: AWS documents and what the SDKs see: DynamoDB single-item reads and writes take single-digit
#: milliseconds; a transaction of 100 conditional puts is charged and coordinated per item, so
#: it is taken as 30 ms; an S3 PUT of a ~100 KB chunk file 50 ms; SQS sends 15 ms. Set high on
#: purpose: the estimate should not flatter.
LATENCY_S = {
    "dynamodb.TransactWriteItems": 0.030,
    "dynamodb.PutItem": 0.008,
    "dynamodb.UpdateItem": 0.008,
    "dynamodb.DeleteItem": 0.008,
    "dynamodb.GetItem": 0.005,
    "dynamodb.BatchGetItem": 0.010,
    "dynamodb.Query": 0.010,
    "s3.PutObject": 0.050,
    "s3.GetObject": 0.030,
    "s3.CreateMultipartUpload": 0.050,
    "s3.UploadPart": 0.100,
    "s3.CompleteMultipartUpload": 0.050,
    "sqs.SendMessage": 0.015,
    "sqs.SendMessageBatch": 0.015,
}
#: Claim transactions in flight at once (CLAIM_BATCH / 100 in pipeline/ingest.py).
CLAIM_PARALLELISM = 10
#: A Lambda vCPU (arm64, 1,769 MB) taken as 1.5x slower than this machine's core for our code.
CPU_FACTOR = 1.5
#: Reading the CSV from S3 in the same region.
S3_READ_BYTES_PER_S = 50e6


def lambda_estimate(measured: dict[str, Any]) -> dict[str, Any]:
    """How long the measured ingest would take in Lambda: its own CPU time here (our work and
    the SDK's, moto excluded: it runs in another process) scaled by ``CPU_FACTOR``, plus every
    call it made waiting ``LATENCY_S`` (claims ``CLAIM_PARALLELISM`` at a time), plus reading
    the file. The calls are counted, not assumed."""
    calls: dict[str, int] = measured["calls"]
    claims = calls.get("dynamodb.TransactWriteItems", 0)
    wait = claims * LATENCY_S["dynamodb.TransactWriteItems"] / CLAIM_PARALLELISM
    other = 0
    for name, count in calls.items():
        if name == "dynamodb.TransactWriteItems":
            continue
        other += count
        wait += count * LATENCY_S.get(name, 0.030)
    read = measured.get("file_bytes", 0) / S3_READ_BYTES_PER_S
    cpu = measured["cpu_seconds"]
    return {
        "seconds": cpu * CPU_FACTOR + wait + read,
        "cpu_s": cpu,
        "cpu_factor": CPU_FACTOR,
        "wait_s": wait + read,
        "claim_calls": claims,
        "other_calls": other,
        "rows": measured["rows"],
        "latency_s": LATENCY_S,
        "claim_parallelism": CLAIM_PARALLELISM,
    }


def _high_water_mark_kib() -> int:
    """Peak resident set of this process image (resets at exec, unlike ru_maxrss)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(sizes: tuple[int, ...] = (10_000, 1_000_000)) -> dict[int, dict[str, Any]]:
    """Peak RSS and rows/s of an ingest of each size, each in its own fresh process."""
    from bench.workload import NO_LIMITS  # noqa: PLC0415
    from voucher_distributor_cli.local.run import LocalPipeline  # noqa: PLC0415
    from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer  # noqa: PLC0415

    results: dict[int, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        SandboxServer(SandboxConfig(token=TOKEN, seed=7), host="127.0.0.1", port=0) as sandbox,
        LocalPipeline(
            certiverse_url=sandbox.base_url,
            certiverse_token=TOKEN,
            default_partner=PARTNER,
            parameters=NO_LIMITS,
        ) as pipeline,
    ):
        assert pipeline.lambdas is not None
        env = {
            **os.environ,
            **pipeline.lambdas.environment("IngestCsvFunction"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        for rows in sizes:
            path = write_csv(Path(tmp) / f"ingest-{rows}.csv", rows)
            size = path.stat().st_size
            key = f"bench/ingest-{rows}.csv"  # outside incoming/: nothing else picks it up
            with path.open("rb") as body:
                put = pipeline.stack.client("s3").put_object(
                    Bucket=pipeline.bucket, Key=key, Body=body
                )
            path.unlink()
            got = subprocess.run(
                [sys.executable, "-m", "bench.ingest_rss", key, put.get("VersionId") or ""],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if got.returncode != 0:
                raise RuntimeError(f"ingest of {rows} rows failed:\n{got.stderr[-3000:]}")
            results[rows] = json.loads(got.stdout.strip().splitlines()[-1])
            results[rows]["file_bytes"] = size
    return results


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
