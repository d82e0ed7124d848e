# ruff: noqa: S603, S607 - the benchmark runs its own interpreter, pip, make and compileall
"""Cold start: import time of each handler from a bundle laid out as Lambda loads it.

The bundle is built like the layer build does (``layers/common/Makefile``, for this machine's
architecture so it can be imported here): the layer's ``python/`` with the .pyc it ships, the
runtime-provided SDK (boto3 and friends) in ``runtime/`` as Lambda's /var/runtime, and each
function's code in its own folder. Each sample is a fresh interpreter (``-I -S``: no venv, no
site) with sys.path = [function folder, layer python/, runtime/], run from outside the repo,
timing ``import app`` inside the process. The baseline is ``import boto3`` the same way.

Two figures: the worst of the queue-fed (and scheduled) handlers, whose goal is 2.0, and the
HTTP API's, watched with no goal: the API is built on Powertools' event handler, whose package
``__init__`` imports every resolver Powertools has (AppSync's brings ``asyncio``) — about 45 ms
the other handlers do not pay, on a function invoked synchronously within API Gateway's 30 s.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER_SRC = ROOT / "layers" / "common"
FUNCTIONS = ROOT / "functions"
PIP_QUIET = ("--quiet", "--disable-pip-version-check")
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")
#: The HTTP API's function folder: judged apart from the queue handlers (see above).
API_FUNCTION = "api"

#: The function environment of template.yaml that matters at import time.
LAMBDA_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_LAMBDA_FUNCTION_NAME": "bench",
    "POWERTOOLS_SERVICE_NAME": "voucher-distributor",
    "POWERTOOLS_METRICS_NAMESPACE": "VoucherDistributor/bench",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
    # The function code ships without .pyc (sam build): do not let sample 1 write one for 2..N.
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _pin(requirements: Path, name: str) -> str:
    for line in requirements.read_text().splitlines():
        if line.strip().lower().startswith(f"{name}=="):
            return line.strip()
    return name


def build_bundle(out: Path, python: str = sys.executable) -> Path:
    """Build the layer (python/), the runtime SDK (runtime/) and the functions into ``out``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    arch = "aarch64" if platform.machine() in {"aarch64", "arm64"} else "x86_64"
    layer = out / "layer"
    makefile = LAYER_SRC / "Makefile"
    if makefile.is_file():
        # The real layer build (what `sam build` runs), for this machine's architecture.
        subprocess.run(
            ["make", "-s", "-C", str(LAYER_SRC), "build-SharedLayer",
             f"ARTIFACTS_DIR={layer}", f"LAYER_ARCH={arch}", f"PYTHON={python}"],
            check=True,
        )  # fmt: skip
    else:  # the same steps, for a tree without the layer Makefile
        site = layer / "python"
        subprocess.run(
            [python, "-m", "pip", "install", *PIP_QUIET, "--no-compile", "--target", str(site),
             "-r", str(LAYER_SRC / "requirements.txt")],
            check=True,
        )  # fmt: skip
        for name in RUNTIME_PROVIDED:
            for path in [*site.glob(f"{name}"), *site.glob(f"{name}-*.dist-info"),
                         *site.glob(f"{name}.py")]:  # fmt: skip
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        shutil.rmtree(site / "bin", ignore_errors=True)
        shutil.copytree(
            LAYER_SRC / "voucher_distributor",
            site / "voucher_distributor",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        _compile(python, site)
    # Lambda's runtime provides boto3 (with its .pyc): the baseline and the handlers use it.
    runtime = out / "runtime"
    subprocess.run(
        [python, "-m", "pip", "install", *PIP_QUIET, "--no-compile", "--target", str(runtime),
         _pin(ROOT / "requirements-dev.txt", "boto3")],
        check=True,
    )  # fmt: skip
    _compile(python, runtime)
    shutil.copytree(FUNCTIONS, out / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    return out


def _compile(python: str, path: Path) -> None:
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def layer_mb(bundle: Path) -> float:
    """Unzipped size of the built layer (everything under layer/), in MB (10^6 bytes)."""
    total = sum(p.stat().st_size for p in (bundle / "layer").rglob("*") if p.is_file())
    return total / 1e6


def import_ms(
    bundle: Path, module: str, function: str | None, *, env: dict[str, str] | None = None
) -> float:
    """One fresh-process sample: milliseconds to import ``module``."""
    paths = [str(bundle / "layer" / "python"), str(bundle / "runtime")]
    if function is not None:
        paths.insert(0, str(bundle / "functions" / function))
    code = (
        "import sys, time\n"
        f"sys.path[:0] = {paths!r}\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    got = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=bundle,
        env={"PATH": os.environ.get("PATH", ""), **LAMBDA_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(got.stdout.strip().splitlines()[-1])


def measure(bundle: Path, *, samples: int = 15, tracing: bool = False) -> dict[str, object]:
    """Median import time of boto3 and of each handler; samples interleaved against drift."""
    env = {} if tracing else {"POWERTOOLS_TRACE_DISABLED": "true"}
    functions = sorted(p.name for p in (bundle / "functions").iterdir() if (p / "app.py").is_file())
    times: dict[str, list[float]] = {"boto3": [], **{f: [] for f in functions}}
    for _ in range(samples):
        times["boto3"].append(import_ms(bundle, "boto3", None))
        for function in functions:
            times[function].append(import_ms(bundle, "app", function, env=env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    worst = max(functions, key=lambda f: medians[f])
    queue_handlers = [f for f in functions if f != API_FUNCTION]
    worst_queue = max(queue_handlers, key=lambda f: medians[f])
    return {
        "boto3_ms": medians["boto3"],
        "handlers_ms": {f: medians[f] for f in functions},
        "worst_handler": worst,
        "ratio": medians[worst] / medians["boto3"],
        "worst_queue_handler": worst_queue,
        "ratio_queue_handlers": medians[worst_queue] / medians["boto3"],
        "ratio_api": medians[API_FUNCTION] / medians["boto3"] if API_FUNCTION in medians else None,
    }
