"""`make lambda-package`: build the Lambda deployment zip (python3.12, x86_64).

The zip holds, at its root: `handler.py` (so the functions' handlers are
`handler.stock_events_handler` and `handler.report_handler`) and the modules
beside it in lambda/, the `dataaccess` package, its runtime dependencies as
manylinux wheels for CPython 3.12, and the CA certificates at
`certs/rds-global-bundle.pem`: the RDS CA bundle, which verifies the cluster's
endpoints, followed by the Amazon Trust Services roots
(`scripts/trust/amazon-trust-services.pem`), which verify RDS Proxy's
certificate. One file verifies both, so the functions' DB_SSLROOTCERT is the same
with DB_PROXY on or off, and nothing is downloaded at run time.

Not shipped: boto3/botocore and their own dependencies (the Lambda runtime
provides them, so they are removed even when another dependency pulls them in;
`--with-boto3` ships the tested version instead) and alembic (migrations run at deploy time,
never inside a function). Every dependency, transitive ones included, is
installed at the version pinned in `constraints.txt`, which the API image
(`api/Dockerfile`) installs from too; `--write-constraints` regenerates that file
from the versions installed in the running environment (the versions the tests
ran against), for the runtime dependencies only.

    python -m scripts.package_lambda [--output build/lambda.zip] [--with-boto3]
    python -m scripts.package_lambda --write-constraints

The RDS CA bundle comes from RDS_CA_BUNDLE (a path), else certs/rds-global-bundle.pem
in the checkout, else a download from AWS (saved to certs/ for next time). Without
one no zip is built: both functions use sslmode=verify-full with the bundle, so
every connection of a zip without it would fail. With RDS_CA_BUNDLE_SHA256 set
(the deploy sets it), a bundle with any other SHA-256 is refused; the Amazon roots
file must have the SHA-256 pinned here (AMAZON_ROOTS_SHA256).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
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

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LAMBDA_DIR = REPO / "lambda"
RUNTIME = "3.12"
PLATFORM = "manylinux2014_x86_64"
CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
CA_IN_ZIP = "certs/rds-global-bundle.pem"
CA_CACHE = REPO / CA_IN_ZIP
# RDS Proxy's certificate comes from AWS Certificate Manager, so it chains to these
# public roots, not to the RDS CA; their provenance is in the file itself.
AMAZON_ROOTS = REPO / "scripts" / "trust" / "amazon-trust-services.pem"
AMAZON_ROOTS_SHA256 = "0f3e94c24417dfb9cb82c2239a548e94a231533cc30f6a5218efcad25aee8cb9"
CONSTRAINTS = REPO / "constraints.txt"
# Where the pinned dependencies run (the Lambda runtime and the API image):
# environment markers are evaluated for it, not for the machine that packages.
TARGET_MARKERS = {
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": f"{RUNTIME}.0",
    "python_version": RUNTIME,
    "sys_platform": "linux",
}
CONSTRAINTS_HEADER = """\
# Runtime dependencies of dataaccess (core, api and lambda extras), transitive
# ones included, pinned to the versions the tests ran against. Used by
# scripts/package_lambda.py (the Lambda zip) and api/Dockerfile (the image).
# Regenerate after changing the installed versions:
#   .venv/bin/python -m scripts.package_lambda --write-constraints
"""
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda: code + layers, unzipped
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # above this the zip must go through S3 (it does anyway)
# Fixed timestamps and modes: the same inputs give the same zip, byte for byte.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
NOT_SHIPPED = {
    "boto3": "the Lambda runtime provides boto3/botocore",
    "alembic": "migrations run at deploy time, not in a function",
}
# What the Lambda runtime's boto3 brings, pulled in again by other dependencies
# (aws-xray-sdk needs botocore): removed after the install, so the zip never ships a
# second botocore that shadows the runtime's (unless --with-boto3 asks for it).
RUNTIME_PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "urllib3",
    "python-dateutil",
    "six",
    # SnapStart's runtime hooks (lambda/handler.py): the runtime's copy is the one it calls.
    "snapshot-restore-py",
)


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def runtime_roots() -> list[str]:
    """The requirement strings every runtime (the image or the zip) starts from."""
    project = _project()
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["api"], *extras["lambda"]]


def installed_runtime_pins() -> dict[str, str]:
    """The runtime dependencies and everything they pull in on the target, by
    canonical name, at the versions installed here; fails on a missing one."""
    pins: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(spec) for spec in runtime_roots()]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{req.name} is required but not installed: install it first") from exc
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"installed {req.name}=={dist.version} does not satisfy {req}")
        pins[name] = dist.version
        for spec in dist.requires or []:
            child = Requirement(spec)
            if child.marker is None or any(
                child.marker.evaluate({**TARGET_MARKERS, "extra": extra})
                for extra in ("", *req.extras)
            ):
                todo.append(child)
    return dict(sorted(pins.items()))


def render_constraints(pins: dict[str, str]) -> str:
    return CONSTRAINTS_HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line must be an exact pin."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._+!-]+", version.strip()):
            raise SystemExit(f"{path.name}: not an exact pin: {line}")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def requirements(*, with_boto3: bool) -> list[str]:
    """The core and `lambda` extra dependencies at their constraints.txt versions."""
    project = _project()
    wanted = [*project["dependencies"], *project["optional-dependencies"]["lambda"]]
    locked = read_constraints()
    pinned = []
    for spec in wanted:
        name = Requirement(spec).name
        if name.lower() in NOT_SHIPPED and not (with_boto3 and name.lower() == "boto3"):
            continue
        version = locked.get(canonicalize_name(name))
        if version is None:
            raise SystemExit(f"{name} is not pinned in {CONSTRAINTS.name}: run --write-constraints")
        pinned.append(f"{name}=={version}")
    return pinned


def install_command(target: Path, pins: list[str]) -> list[str]:
    """pip install into `target` for the Lambda runtime; transitive dependencies
    are held to constraints.txt too."""
    return [
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
        "--constraint",
        str(CONSTRAINTS),
        *pins,
    ]


def install_dependencies(target: Path, pins: list[str], *, with_boto3: bool) -> None:
    subprocess.run(install_command(target, pins), check=True)
    # Console scripts are useless in a function and hold build-machine paths.
    shutil.rmtree(target / "bin", ignore_errors=True)
    if not with_boto3:
        for name in RUNTIME_PROVIDED:
            remove_distribution(target, name)


def remove_distribution(target: Path, name: str) -> None:
    """Delete an installed distribution from `target`: the files its RECORD lists."""
    for info in target.glob("*.dist-info"):
        dist = metadata.Distribution.at(info)
        if canonicalize_name(dist.metadata["Name"]) != canonicalize_name(name):
            continue
        for file in dist.files or []:
            path = (target / file).resolve()
            if path.is_relative_to(target.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
        # Emptied package folders (and their __pycache__) go too.
        for folder in sorted(target.iterdir()):
            if folder.is_dir() and not any(f.is_file() for f in folder.rglob("*")):
                shutil.rmtree(folder)


def function_modules() -> list[Path]:
    """lambda/'s modules: handler.py and the modules beside it, all at the zip's root."""
    return sorted(LAMBDA_DIR.glob("*.py"))


def copy_sources(target: Path) -> None:
    """The function's modules and the dataaccess package into `target`, where the
    dependencies are already installed; a module that would shadow one of them is refused."""
    for module in function_modules():
        taken = [p for p in (target / module.name, target / module.stem) if p.exists()]
        if taken:
            raise SystemExit(
                f"lambda/{module.name} would shadow {taken[0].name} installed in the zip's root: "
                "rename it"
            )
        shutil.copy2(module, target / module.name)
    shutil.copytree(
        REPO / "dataaccess",
        target / "dataaccess",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def ca_bundle() -> tuple[bytes | None, str]:
    """The RDS CA bundle and where it came from, or None and why not; with
    RDS_CA_BUNDLE_SHA256 set, only a bundle with that SHA-256."""
    bundle, origin = _find_ca_bundle()
    expected = os.environ.get("RDS_CA_BUNDLE_SHA256", "").strip().lower()
    if bundle is None or not expected:
        return bundle, origin
    actual = hashlib.sha256(bundle).hexdigest()
    if actual != expected:
        return None, f"{origin} has SHA-256 {actual}, not RDS_CA_BUNDLE_SHA256 {expected}"
    return bundle, f"{origin}, SHA-256 verified"


def _find_ca_bundle() -> tuple[bytes | None, str]:
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
    expected = os.environ.get("RDS_CA_BUNDLE_SHA256", "").strip().lower()
    if bundle is not None and (not expected or hashlib.sha256(bundle).hexdigest() == expected):
        CA_CACHE.parent.mkdir(exist_ok=True)
        CA_CACHE.write_bytes(bundle)
    return bundle, origin


def amazon_roots() -> bytes:
    """The Amazon Trust Services roots from the checkout, refused unless their SHA-256 is pinned."""
    data = AMAZON_ROOTS.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != AMAZON_ROOTS_SHA256:
        raise SystemExit(
            f"{AMAZON_ROOTS.relative_to(REPO)} has SHA-256 {actual}, not the pinned "
            f"AMAZON_ROOTS_SHA256 {AMAZON_ROOTS_SHA256}: check its certificates against "
            "https://www.amazontrust.com/repository/, then update the pin"
        )
    return data


def zip_ca_bundle(rds_bundle: bytes, origin: str) -> bytes:
    """The zip's CA file: the RDS bundle (the cluster), then the Amazon roots (RDS Proxy)."""
    header = (
        f"# {CA_IN_ZIP}: the RDS CA bundle ({origin}, SHA-256 "
        f"{hashlib.sha256(rds_bundle).hexdigest()}), then the Amazon Trust Services roots "
        f"({AMAZON_ROOTS.relative_to(REPO)}) for RDS Proxy.\n"
    )
    return header.encode() + rds_bundle.rstrip(b"\n") + b"\n" + amazon_roots()


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
    parser.add_argument(
        "--write-constraints",
        action="store_true",
        help=f"write {CONSTRAINTS.name} from the installed runtime dependencies and exit",
    )
    args = parser.parse_args(argv)
    if args.write_constraints:
        pins = installed_runtime_pins()
        CONSTRAINTS.write_text(render_constraints(pins))
        print(f"wrote {CONSTRAINTS.name}: {len(pins)} pins")
        return 0
    pins = requirements(with_boto3=args.with_boto3)
    # The certificates first: without them the zip is useless, and nothing is installed yet.
    bundle, origin = ca_bundle()
    if bundle is None:
        print(
            f"ERROR: no RDS CA bundle, so no zip: {origin}.\n"
            f"  The functions connect with sslmode=verify-full and "
            f"DB_SSLROOTCERT=/var/task/{CA_IN_ZIP}:\n"
            "  without the bundle every connection would fail.\n"
            f"  Download {CA_URL} and rebuild with RDS_CA_BUNDLE=<path to it>.",
            file=sys.stderr,
        )
        return 1
    certificates = zip_ca_bundle(bundle, origin)
    print(f"lambda package for python{RUNTIME} x86_64 ({PLATFORM}): {', '.join(pins)}")
    for name, why in NOT_SHIPPED.items():
        if not (args.with_boto3 and name == "boto3"):
            print(f"  not shipped: {name} ({why})")

    with tempfile.TemporaryDirectory(prefix="lambda-package-") as tmp:
        staging = Path(tmp)
        install_dependencies(staging, pins, with_boto3=args.with_boto3)
        copy_sources(staging)
        (staging / "certs").mkdir(exist_ok=True)
        (staging / CA_IN_ZIP).write_bytes(certificates)
        print(
            f"  CA certificates: {CA_IN_ZIP}, the RDS CA bundle (from {origin}) and the "
            "Amazon Trust Services roots (RDS Proxy)"
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
