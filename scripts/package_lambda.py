"""`make lambda-package`: build the Lambda deployment zip (python3.12, x86_64).

The zip holds, at its root: `handler.py` (so the functions' handlers are
`handler.stock_events_handler` and `handler.report_handler`), the `dataaccess`
package, its runtime dependencies as manylinux wheels for CPython 3.12, and the
RDS CA bundle at `certs/rds-global-bundle.pem` when one is available.

Not shipped: boto3/botocore (the Lambda runtime provides them; `--with-boto3`
ships the tested version instead) and alembic (migrations run at deploy time,
never inside a function). Dependencies are pinned to the versions installed in
the running environment, i.e. the versions the tests ran against.

    python -m scripts.package_lambda [--output build/lambda.zip] [--with-boto3]

The CA bundle comes from RDS_CA_BUNDLE (a path), else certs/rds-global-bundle.pem
in the checkout, else a download from AWS (saved to certs/ for next time); when
all fail the zip is built without it, and the script says so.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME = "3.12"
PLATFORM = "manylinux2014_x86_64"
CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
CA_IN_ZIP = "certs/rds-global-bundle.pem"
CA_CACHE = REPO / CA_IN_ZIP
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda: code + layers, unzipped
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # above this the zip must go through S3 (it does anyway)
# Fixed timestamps and modes: the same inputs give the same zip, byte for byte.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
NOT_SHIPPED = {
    "boto3": "the Lambda runtime provides boto3/botocore",
    "alembic": "migrations run at deploy time, not in a function",
}


def requirements(*, with_boto3: bool) -> list[str]:
    """The core and `lambda` extra dependencies, pinned to the installed (tested) versions."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["lambda"]]
    pinned = []
    for spec in wanted:
        name = re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]
        if name.lower() in NOT_SHIPPED and not (with_boto3 and name.lower() == "boto3"):
            continue
        pinned.append(f"{name}=={metadata.version(name)}")
    return pinned


def install_dependencies(target: Path, pins: list[str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--target",
            str(target),
            "--platform",
            PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            RUNTIME,
            "--only-binary=:all:",
            *pins,
        ],
        check=True,
    )
    # Console scripts are useless in a function and hold build-machine paths.
    shutil.rmtree(target / "bin", ignore_errors=True)


def copy_sources(target: Path) -> None:
    shutil.copy2(REPO / "lambda" / "handler.py", target / "handler.py")
    shutil.copytree(
        REPO / "dataaccess",
        target / "dataaccess",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def ca_bundle() -> tuple[bytes | None, str]:
    """The RDS CA bundle and where it came from, or None and why not."""
    given = os.environ.get("RDS_CA_BUNDLE")
    if given:
        path = Path(given)
        if not path.is_file():
            return None, f"RDS_CA_BUNDLE names a file that does not exist: {given}"
        return _pem_or_none(path.read_bytes(), "RDS_CA_BUNDLE")
    if CA_CACHE.is_file():
        return _pem_or_none(CA_CACHE.read_bytes(), f"{CA_IN_ZIP} in the checkout")
    try:
        with urllib.request.urlopen(CA_URL, timeout=10) as response:
            data = response.read()
    except OSError as exc:
        return None, f"download from {CA_URL} failed ({type(exc).__name__}: {exc})"
    bundle, origin = _pem_or_none(data, CA_URL)
    if bundle is not None:
        CA_CACHE.parent.mkdir(exist_ok=True)
        CA_CACHE.write_bytes(bundle)
    return bundle, origin


def _pem_or_none(data: bytes, origin: str) -> tuple[bytes | None, str]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return None, f"{origin} is not a PEM certificate bundle"
    return data, origin


def precompile(target: Path) -> str:
    """Compile .pyc for the runtime's Python, when one is at hand; /var/task is read-only,
    so without them every cold start compiles every module it imports."""
    python = _find_runtime_python()
    if python is None:
        return f"not precompiled: no python{RUNTIME} found (set LAMBDA_PYTHON to one)"
    subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j0",
            # Zip extraction does not keep mtimes the way a timestamp pyc wants.
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(target),
            "-p",
            "/var/task",
            str(target),
        ],
        check=True,
    )
    return f"precompiled with python{RUNTIME} (unchecked-hash .pyc)"


def _find_runtime_python() -> str | None:
    candidates = [os.environ.get("LAMBDA_PYTHON", ""), f"python{RUNTIME}"]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{RUNTIME}*/bin/python3")))
    for candidate in filter(None, candidates):
        found = shutil.which(candidate)
        if found is None:
            continue
        probe = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == RUNTIME:
            return found
    return None


def write_zip(source: Path, output: Path) -> int:
    """Zip `source` deterministically; return the unzipped size in bytes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    unzipped = 0
    tmp = output.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), ZIP_DATE)
            mode = 0o755 if os.access(path, os.X_OK) and path.suffix == ".so" else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            archive.writestr(info, data)
    tmp.replace(output)
    return unzipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "build" / "lambda.zip")
    parser.add_argument(
        "--with-boto3", action="store_true", help="ship the tested boto3 instead of the runtime's"
    )
    args = parser.parse_args(argv)
    pins = requirements(with_boto3=args.with_boto3)
    print(f"lambda package for python{RUNTIME} x86_64 ({PLATFORM}): {', '.join(pins)}")
    for name, why in NOT_SHIPPED.items():
        if not (args.with_boto3 and name == "boto3"):
            print(f"  not shipped: {name} ({why})")

    with tempfile.TemporaryDirectory(prefix="lambda-package-") as tmp:
        staging = Path(tmp)
        install_dependencies(staging, pins)
        copy_sources(staging)
        bundle, origin = ca_bundle()
        if bundle is not None:
            (staging / "certs").mkdir(exist_ok=True)
            (staging / CA_IN_ZIP).write_bytes(bundle)
            print(f"  RDS CA bundle: included as {CA_IN_ZIP} (from {origin})")
        else:
            print(
                f"  WARNING: RDS CA bundle NOT included: {origin}.\n"
                f"  The functions set DB_SSLROOTCERT=/var/task/{CA_IN_ZIP}, so they will fail "
                "to start until it is there.\n"
                f"  Download {CA_URL} and rebuild with RDS_CA_BUNDLE=<path to it>."
            )
        print(f"  bytecode: {precompile(staging)}")
        unzipped = write_zip(staging, args.output)

    zipped = args.output.stat().st_size
    mib = 1024 * 1024
    shown = args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output
    print(
        f"built {shown}: {zipped / mib:.1f} MiB zipped, {unzipped / mib:.1f} MiB unzipped "
        f"(Lambda limit {UNZIPPED_LIMIT // mib} MiB unzipped)"
    )
    if zipped > DIRECT_UPLOAD_LIMIT:
        print(f"  note: over {DIRECT_UPLOAD_LIMIT // mib} MiB zipped: upload through S3")
    if unzipped > UNZIPPED_LIMIT:
        print("ERROR: the package exceeds Lambda's unzipped size limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
