"""Inspect the output of ``sam build`` (``make build-check``): is it what Lambda will run?

1. Every wheel in the layer is pure Python or built for the functions' platform (CPython 3.12,
   manylinux, aarch64), and every native library is an aarch64 ELF.
2. Every ``.py`` of the layer has a ``.pyc`` for Python 3.12, in unchecked-hash mode (used as is
   on the read-only /opt, whatever mtimes the zip gives the sources).
3. The SDK the runtime provides (boto3, botocore, ...) is not shipped again.
4. Each function's handler module imports with only its own folder and the layer on the path,
   as in Lambda. The runtime's own packages (boto3 and friends) come from this host; so do the
   native extensions when this host cannot load aarch64 code, and only those: a pure-Python
   dependency missing from the layer still fails the import.

Usage: python devtools/check_build.py [BUILD_DIR] [--template template.yaml]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

RUNTIME_PYTHON = (3, 12)
ELF_MACHINES = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64
PLATFORM_SUFFIX = {"arm64": "_aarch64", "x86_64": "_x86_64"}
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")


class _Loader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags as plain values (only names are needed here)."""


def _ignore_tag(_loader: yaml.SafeLoader, _suffix: str, _node: yaml.Node) -> None:
    return None


_Loader.add_multi_constructor("!", _ignore_tag)


def check_wheels(site: Path, arch: str) -> list[str]:
    problems = []
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        tags = [line.split(":", 1)[1].strip() for line in wheel.read_text().splitlines()
                if line.startswith("Tag:")]  # fmt: skip
        for tag in tags:
            interpreter, abi, plat = tag.split("-")
            if plat == "any":
                continue
            if not plat.endswith(PLATFORM_SUFFIX[arch]) or "linux" not in plat:
                problems.append(f"{wheel.parent.name}: platform tag {plat} is not linux {arch}")
            stable_abi = abi == "abi3" and interpreter <= "cp312"
            if interpreter not in {"cp312", "py3"} and not stable_abi:
                problems.append(f"{wheel.parent.name}: interpreter tag {interpreter} is not cp312")
    for library in sorted(site.rglob("*.so")):
        header = library.read_bytes()[:20]
        machine = int.from_bytes(header[18:20], "little")
        if header[:4] != b"\x7fELF" or machine != ELF_MACHINES[arch]:
            problems.append(f"{library.relative_to(site)}: not an {arch} ELF (e_machine {machine})")
    return problems


def check_bytecode(site: Path) -> tuple[list[str], int]:
    if sys.version_info[:2] != RUNTIME_PYTHON:
        return [f"run this check with Python {RUNTIME_PYTHON[0]}.{RUNTIME_PYTHON[1]}"], 0
    problems, count = [], 0
    tag = sys.implementation.cache_tag
    for source in sorted(site.rglob("*.py")):
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        count += 1
        if not pyc.is_file():
            problems.append(f"{source.relative_to(site)}: no {pyc.name}")
            continue
        header = pyc.read_bytes()[:8]
        if header[:4] != importlib.util.MAGIC_NUMBER:
            problems.append(f"{pyc.relative_to(site)}: not compiled by Python 3.12")
        elif int.from_bytes(header[4:8], "little") != 0b01:
            problems.append(f"{pyc.relative_to(site)}: not an unchecked-hash .pyc")
    return problems, count


# Runs in a bare interpreter (-I -S): the function folder, then the layer, then stdlib. A finder
# serves the runtime-provided SDK from this host and, on a non-aarch64 host, the native
# extensions the layer holds for aarch64 (their same-version host builds): nothing else.
_IMPORT_PROBE = r"""
import glob, importlib.abc, importlib.machinery, json, os, sys
function_dir, layer, host_site, provided, native_from_host = json.loads(sys.argv[1])
sys.path[:0] = [function_dir, layer]

class HostFallback(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        last = name.rpartition(".")[2]
        top = name.partition(".")[0]
        if top in provided:  # what the Lambda runtime itself provides
            return importlib.machinery.PathFinder.find_spec(name, [host_site] if path is None
                else [p.replace(layer, host_site, 1) for p in path])
        if not (native_from_host and path):
            return None
        in_layer = [p for p in path if str(p).startswith(layer)]
        # A native extension built for the Lambda platform, which this host cannot load:
        if not any(glob.glob(os.path.join(p, last + ".*-linux-gnu.so")) for p in in_layer):
            return None
        spec = importlib.machinery.PathFinder.find_spec(
            name, [p.replace(layer, host_site, 1) for p in in_layer])
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            served.append(name)
            return spec
        return None

served = []
sys.meta_path.insert(0, HostFallback())
import app
assert callable(getattr(app, "handler", None)), "app.handler is not callable"
from_layer = sorted(m.__name__.partition(".")[0] for m in list(sys.modules.values())
                    if (getattr(m, "__file__", None) or "").startswith(layer))
print(json.dumps({"native_from_host": served, "layer_packages": sorted(set(from_layer))}))
"""


def check_imports(build_dir: Path, site: Path, functions: dict[str, str], arch: str) -> list[str]:
    problems = []
    host_site = sysconfig.get_paths()["purelib"]
    native_from_host = ELF_MACHINES[arch] != ELF_MACHINES.get(_host_arch(), -1)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "voucher-distributor",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_DEV": "false",
        "PYTHONDONTWRITEBYTECODE": "1",  # the artifact stays as built
    }
    for logical_id, handler in functions.items():
        function_dir = build_dir / logical_id
        module = handler.rpartition(".")[0]
        if not (function_dir / f"{module}.py").is_file():
            problems.append(f"{logical_id}: {module}.py is not in the build output")
            continue
        argv = json.dumps(
            [str(function_dir), str(site), host_site, list(RUNTIME_PROVIDED), native_from_host]
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter and probe
            [sys.executable, "-I", "-S", "-c", _IMPORT_PROBE, argv],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            problems.append(f"{logical_id}: handler import failed:\n{done.stderr.strip()[-2000:]}")
            continue
        report = json.loads(done.stdout.strip().splitlines()[-1])
        native = ", ".join(report["native_from_host"])
        print(
            f"  {logical_id}: imports; from the layer: {', '.join(report['layer_packages'])}"
            + (f"; native extensions from this host: {native}" if native else "")
        )
    return problems


def _host_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in {"aarch64", "arm64"} else machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", type=Path, nargs="?", default=Path(".aws-sam/build"))
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    args = parser.parse_args(argv)
    args.build_dir = args.build_dir.resolve()
    document = yaml.load(args.template.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader
    glob = (document.get("Globals") or {}).get("Function") or {}
    arch = (glob.get("Architectures") or ["x86_64"])[0]
    functions = {
        lid: (res["Properties"].get("Handler") or glob.get("Handler"))
        for lid, res in document["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }
    layers = [lid for lid, res in document["Resources"].items()
              if res["Type"] == "AWS::Serverless::LayerVersion"]  # fmt: skip
    problems: list[str] = []
    for layer_id in layers:
        site = args.build_dir / layer_id / "python"
        if not site.is_dir():
            problems.append(f"{layer_id}: no python/ in {args.build_dir / layer_id}")
            continue
        size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        wheels = check_wheels(site, arch)
        bytecode, sources = check_bytecode(site)
        shipped = [name for name in RUNTIME_PROVIDED if (site / name).exists()]
        print(
            f"{layer_id}: {size / 1e6:.1f} MB unzipped, {len(list(site.glob('*.dist-info')))} "
            f"wheels, {len(list(site.rglob('*.so')))} native libraries ({arch}), "
            f"{sources} modules with .pyc"
        )
        problems += wheels + bytecode
        problems += [f"{layer_id}: ships {name}, which the runtime provides" for name in shipped]
        problems += check_imports(args.build_dir, site, functions, arch)
    if not layers:
        problems.append("the template has no layer")
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print("build check: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
