"""The packaging script's decisions, without building (building needs PyPI)."""

from __future__ import annotations

import zipfile

from scripts import package_lambda


def test_runtime_provided_and_deploy_time_packages_are_not_shipped():
    pins = package_lambda.requirements(with_boto3=False)
    names = {pin.split("==")[0].lower() for pin in pins}

    assert {"sqlalchemy", "psycopg2-binary", "aws-lambda-powertools"} <= names
    assert not names & {"boto3", "alembic"}
    assert all("==" in pin for pin in pins)  # the tested versions, not whatever is newest


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
