"""The packaging script's decisions, without building (building needs PyPI); the CA file it
writes is also read by libpq, against the test cluster."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import ssl
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg2
import pytest

from scripts import package_lambda
from scripts.localpg import free_port

AMAZON_ROOTS = [
    "Amazon Root CA 1",
    "Amazon Root CA 2",
    "Amazon Root CA 3",
    "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
]


def ca_certs(path) -> list[dict]:
    """The CA certificates OpenSSL loads from a PEM file, decoded (subject, issuer, dates)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(path))
    return context.get_ca_certs()


def common_name(cert: dict) -> str:
    return dict(pair for rdn in cert["subject"] for pair in rdn)["commonName"]


@pytest.fixture
def no_rds_bundle_anywhere(tmp_path, monkeypatch):
    """No RDS_CA_BUNDLE, none in the checkout, and a download URL nothing answers (offline)."""
    monkeypatch.delenv("RDS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("RDS_CA_BUNDLE_SHA256", raising=False)
    monkeypatch.setattr(package_lambda, "CA_CACHE", tmp_path / "no-cache.pem")
    monkeypatch.setattr(package_lambda, "CA_URL", f"http://127.0.0.1:{free_port()}/bundle.pem")
    installs: list[object] = []
    monkeypatch.setattr(package_lambda, "install_dependencies", lambda *a, **k: installs.append(a))
    return installs


def test_runtime_provided_and_deploy_time_packages_are_not_shipped():
    pins = package_lambda.requirements(with_boto3=False)
    names = {pin.split("==")[0].lower() for pin in pins}

    assert {"sqlalchemy", "psycopg2-binary", "aws-lambda-powertools"} <= names
    assert not names & {"boto3", "alembic"}
    assert all("==" in pin for pin in pins)  # the tested versions, not whatever is newest


def fake_distribution(target: Path, name: str, files: dict[str, str]) -> None:
    """An installed distribution as pip leaves it: its files and a dist-info naming them."""
    info = target / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    for rel, text in files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_text(text)
    record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in record))


def test_what_the_runtime_provides_is_removed_even_when_pulled_in(tmp_path):
    # aws-xray-sdk depends on botocore: the zip must not carry a second one.
    fake_distribution(
        tmp_path, "botocore", {"botocore/__init__.py": "", "botocore/data/x.json": ""}
    )
    fake_distribution(tmp_path, "python-dateutil", {"dateutil/__init__.py": ""})
    fake_distribution(tmp_path, "wrapt", {"wrapt/__init__.py": ""})
    for name in package_lambda.RUNTIME_PROVIDED:
        package_lambda.remove_distribution(tmp_path, name)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "wrapt-1.0.dist-info/METADATA",
        "wrapt-1.0.dist-info/RECORD",
        "wrapt/__init__.py",
    ]


def test_boto3_can_be_shipped_on_request():
    pins = package_lambda.requirements(with_boto3=True)

    assert any(pin.lower().startswith("boto3==") for pin in pins)


def test_the_ca_bundle_comes_from_rds_ca_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("RDS_CA_BUNDLE", str(bundle))

    data, origin = package_lambda.ca_bundle()

    assert data == bundle.read_bytes()
    assert origin == "RDS_CA_BUNDLE"


def test_a_missing_or_bogus_ca_bundle_is_reported_not_shipped(tmp_path, monkeypatch):
    monkeypatch.setenv("RDS_CA_BUNDLE", str(tmp_path / "absent.pem"))
    assert package_lambda.ca_bundle()[0] is None

    bogus = tmp_path / "bogus.pem"
    bogus.write_text("<html>not a certificate</html>")
    monkeypatch.setenv("RDS_CA_BUNDLE", str(bogus))
    data, why = package_lambda.ca_bundle()
    assert data is None
    assert "not a PEM" in why


def test_the_function_modules_sit_at_the_zip_root_and_import_from_there(tmp_path):
    package_lambda.copy_sources(tmp_path)

    shipped = sorted(p.name for p in tmp_path.glob("*.py"))
    assert shipped == sorted(p.name for p in package_lambda.function_modules())
    assert {"handler.py", "stock_batch.py", "stock_messages.py", "failures.py"} <= set(shipped)
    # As the runtime imports it: /var/task on sys.path, `handler` a top-level module.
    probe = (
        "import json, handler, stock_batch, dataaccess; "
        "print(json.dumps([m.__file__ for m in (handler, stock_batch, dataaccess)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    files = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(tmp_path) for f in files), files


def test_a_function_module_that_would_shadow_a_dependency_is_refused(tmp_path):
    (tmp_path / "failures").mkdir()  # a dependency's top-level package of the same name
    (tmp_path / "failures" / "__init__.py").write_text("")

    with pytest.raises(SystemExit, match=r"lambda/failures\.py would shadow failures"):
        package_lambda.copy_sources(tmp_path)


def test_no_function_module_shadows_the_standard_library():
    names = {p.stem for p in package_lambda.function_modules()}
    assert names
    assert not names & set(sys.stdlib_module_names)


def test_the_zip_is_reproducible_and_counts_its_unzipped_size(tmp_path):
    source = tmp_path / "src"
    (source / "dataaccess").mkdir(parents=True)
    (source / "handler.py").write_text("def stock_events_handler(event, context): ...\n")
    (source / "dataaccess" / "__init__.py").write_text("")

    first = package_lambda.write_zip(source, tmp_path / "a.zip")
    (source / "handler.py").touch()  # a new mtime must not change the bytes
    package_lambda.write_zip(source, tmp_path / "b.zip")

    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert first == len("def stock_events_handler(event, context): ...\n")
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.namelist() == ["dataaccess/__init__.py", "handler.py"]


def test_no_zip_is_built_without_an_rds_ca_bundle(no_rds_bundle_anywhere, tmp_path, capsys):
    output = tmp_path / "lambda.zip"

    assert package_lambda.main(["--output", str(output)]) == 1

    assert not output.exists()
    assert no_rds_bundle_anywhere == []  # it stopped before installing anything
    error = capsys.readouterr().err
    assert "no RDS CA bundle, so no zip" in error
    assert "RDS_CA_BUNDLE=" in error  # and says how to supply one


def test_a_bundle_with_another_checksum_builds_no_zip(
    no_rds_bundle_anywhere, tmp_path, monkeypatch
):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("RDS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("RDS_CA_BUNDLE_SHA256", "0" * 64)

    assert package_lambda.main(["--output", str(tmp_path / "lambda.zip")]) == 1
    assert no_rds_bundle_anywhere == []


def test_the_committed_amazon_roots_are_the_five_public_roots():
    data = package_lambda.amazon_roots()  # refused unless its SHA-256 is the pinned one
    certs = ca_certs(package_lambda.AMAZON_ROOTS)
    assert [common_name(cert) for cert in certs] == AMAZON_ROOTS
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    for cert in certs:
        assert cert["issuer"] == cert["subject"]  # roots: self-signed
        assert dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC) > soon
    # Each one's SHA-256 fingerprint is the one written beside it, which amazontrust.com lists.
    blocks = data.decode().split("-----END CERTIFICATE-----")[:-1]
    assert len(blocks) == len(AMAZON_ROOTS)
    for block in blocks:
        pem = block[block.index("-----BEGIN") :] + "-----END CERTIFICATE-----\n"
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
        fingerprint = ":".join(digest[i : i + 2] for i in range(0, 64, 2))
        assert f"# SHA256 Fingerprint: {fingerprint}" in block


def test_changed_amazon_roots_are_refused(tmp_path, monkeypatch):
    changed = tmp_path / "roots.pem"
    changed.write_bytes(package_lambda.AMAZON_ROOTS.read_bytes() + b"\n")
    monkeypatch.setattr(package_lambda, "AMAZON_ROOTS", changed)
    monkeypatch.setattr(package_lambda, "REPO", tmp_path)

    with pytest.raises(SystemExit, match="AMAZON_ROOTS_SHA256"):
        package_lambda.amazon_roots()


def test_the_zip_ca_file_holds_the_rds_bundle_then_the_amazon_roots(pg_cluster, tmp_path):
    """One file for DB_SSLROOTCERT, cluster or proxy; libpq reads it whole (verify-full)."""
    if pg_cluster.ca_file is None:
        pytest.skip("the test cluster runs without TLS (no openssl)")
    # The cluster's own certificate plays the RDS CA bundle.
    rds_stand_in = Path(pg_cluster.ca_file).read_bytes()
    combined = package_lambda.zip_ca_bundle(rds_stand_in, "the test cluster")
    path = tmp_path / "rds-global-bundle.pem"
    path.write_bytes(combined)

    assert [common_name(cert) for cert in ca_certs(path)] == ["localpg", *AMAZON_ROOTS]
    assert hashlib.sha256(rds_stand_in).hexdigest() in combined.decode().splitlines()[0]
    conn = psycopg2.connect(
        host=pg_cluster.host,
        port=pg_cluster.port,
        dbname="postgres",
        user=pg_cluster.user,
        password=pg_cluster.password,
        sslmode="verify-full",
        sslrootcert=str(path),
    )
    try:
        assert conn.info.ssl_in_use
    finally:
        conn.close()
