"""``make reliability``: many seeded fault-injection runs, then the figures table.

    .venv/bin/python -m tests.reliability.run [--runs 1000] [--first-seed 0] [--workers 2]
        [--out local-results/reliability]

Each worker process owns one moto stack, one sandbox and the handlers, and runs its share of
the seeds (seed i goes to worker i mod workers). Every run is recorded as one JSON line in
``<out>/runs.jsonl`` (and, as each run ends, in ``<out>/runs-<worker>.partial.jsonl``, so a
stopped pass keeps its seeds; a violation's seed is also printed at once); the table goes to
stdout and ``<out>/figures.md``, and ends with ``runs: N, faults: F, violations: V``. The exit
status is 1 when any run broke an invariant.
Re-run one seed with ``--first-seed S --runs 1 --workers 1``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any


def _worker(args: tuple[list[int], str, int]) -> list[dict[str, Any]]:
    seeds, out_dir, worker_no = args
    from tests.reliability.harness import Harness, make_scenario, record_json

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vd-reliability-") as tmp:
        log = (Path(out_dir) / f"handlers-{worker_no}.log").open("w", encoding="utf-8")
        # Each run is written as it ends, so a pass that is stopped keeps what it found.
        partial = (Path(out_dir) / f"runs-{worker_no}.partial.jsonl").open("w", encoding="utf-8")
        with Harness(Path(tmp), log=log) as harness:  # type: ignore[arg-type]
            for done, seed in enumerate(seeds, start=1):
                try:
                    record = harness.run(make_scenario(seed))
                except BaseException:
                    # Said at once: the pool only hands a worker's exception back when every
                    # worker is done, and the worker's remaining seeds are lost with it.
                    print(f"\nseed {seed}: the harness itself failed (this worker stops):\n"
                          f"{traceback.format_exc()}", file=sys.stderr, flush=True)  # fmt: skip
                    raise
                line = record_json(record)
                records.append(json.loads(line))
                partial.write(line + "\n")
                partial.flush()
                if record.violations:
                    print(f"\nseed {seed}: {record.violations}", file=sys.stderr, flush=True)
                mark = "X" if record.violations else "."
                print(mark, end="\n" if done % 50 == 0 else "", file=sys.stderr, flush=True)
        partial.close()
    return records


def figures(records: list[dict[str, Any]], *, wall_s: float, workers: int, first: int) -> str:
    runs = len(records)
    fired: Counter[str] = Counter()
    runs_with: Counter[str] = Counter()
    for record in records:
        for name, count in record["fired"].items():
            fired[name] += count
            runs_with[name] += 1
    # One status per batch (a run of several inputs has several batches).
    statuses = Counter(s for r in records for s in (r.get("statuses") or [r["status"]]))
    never_ended = sum(1 for r in records if r["status"] not in {"done", "failed"})
    multi = Counter(r.get("multi") or "" for r in records)
    rows: Counter[str] = Counter()
    for record in records:
        for status in ("assigned", "existing", "rejected", "failed"):
            rows[status] += record["counts"].get(status, 0)
    chunks = sum(r["chunks"] for r in records)
    violations = [r for r in records if r["violations"]]
    seconds = sorted(r["seconds"] for r in records) or [0.0]
    total_faults = sum(fired.values())
    lines = [
        f"Fault-injection runs: seeds {first}..{first + runs - 1}, {workers} worker(s), "
        f"wall time {wall_s / 60:.1f} min "
        f"(per run: median {seconds[len(seconds) // 2]:.1f} s, "
        f"p95 {seconds[int(len(seconds) * 0.95) - 1 if runs > 1 else 0]:.1f} s)",
        "",
        "| fault injected (seam) | runs | times |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {runs_with[name]} | {fired[name]} |" for name in sorted(fired)),
        "",
        "| outcome | count |",
        "| --- | ---: |",
        f"| batches completed | {statuses.get('done', 0)} |",
        f"| batches refused (input unusable, e.g. token revoked at ingest) | "
        f"{statuses.get('failed', 0)} |",
        f"| runs whose batches never all ended | {never_ended} |",
        f"| runs of several inputs: duplicate uploads / overlapping requests / re-uploads | "
        f"{multi['duplicate-uploads']} / {multi['overlapping-requests']} / "
        f"{multi['re-upload']} |",
        f"| chunks planned | {chunks} |",
        f"| rows assigned / rejected / failed | {rows['assigned']} / {rows['rejected']} / "
        f"{rows['failed']} |",
        f"| rows existing (the person already held a code: nothing bought) | {rows['existing']} |",
        f"| e-mails sent / rows left `unknown` (the crash window) / second e-mails / codes "
        f"not the recipient's | {fired['email:sent']} / {fired['email:unknown-window']} / "
        f"{_said(violations, 'a second one')} / {_said(violations, 'someone else')} |",
        f"| runs with a violated invariant | {len(violations)} |",
        "",
    ]
    for record in violations[:20]:
        lines.append(f"seed {record['seed']} {record['faults']}: {record['violations']}")
    lines.append(f"runs: {runs}, faults: {total_faults}, violations: {len(violations)}")
    return "\n".join(lines)


def _said(violations: list[dict[str, Any]], words: str) -> int:
    return sum(1 for r in violations for v in r["violations"] if words in v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("local-results/reliability"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.first_seed, args.first_seed + args.runs))
    workers = max(1, min(args.workers, len(seeds)))
    shares = [(seeds[i::workers], str(args.out), i) for i in range(workers)]
    started = time.monotonic()
    print(f"{len(seeds)} runs on {workers} worker(s); one mark per run (X = violation)",
          file=sys.stderr)  # fmt: skip
    if workers == 1:
        results = [_worker(shares[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_worker, shares)
    records = sorted((r for share in results for r in share), key=lambda r: r["seed"])
    wall = time.monotonic() - started
    print(file=sys.stderr)
    with (args.out / "runs.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    table = figures(records, wall_s=wall, workers=workers, first=args.first_seed)
    (args.out / "figures.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 1 if any(r["violations"] for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
