"""TLS as in AWS: sslmode=verify-full against the server's CA, and refusal of any other CA."""

import subprocess
from dataclasses import replace

import pytest
import sqlalchemy as sa

from dataaccess import Database, Settings
from dataaccess.settings import SettingsError


@pytest.fixture
def ca_file(pg_cluster):
    if pg_cluster.ca_file is None:
        pytest.skip("the local cluster runs without TLS (no openssl on this machine)")
    return pg_cluster.ca_file


def ssl_in_use(db):
    with db.unit_of_work(read_only=True) as uow:
        return uow.session.execute(
            sa.text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ).one()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full_connects_over_tls(app_settings, ca_file, host):
    settings = replace(app_settings, host=host, sslmode="verify-full", sslrootcert=ca_file)
    db = Database.from_settings(settings)
    ssl, version = ssl_in_use(db)
    db.dispose()
    assert ssl is True
    assert version.startswith("TLSv1.")


def test_a_certificate_from_another_ca_is_refused(app_settings, ca_file, tmp_path):
    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-subj", "/CN=other"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    db = Database.from_settings(
        replace(app_settings, sslmode="verify-full", sslrootcert=str(other))
    )
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        ssl_in_use(db)
    db.dispose()


def test_settings_take_the_bundle_path_from_the_environment(app_settings, ca_file):
    env = {
        "DB_HOST": app_settings.host,
        "DB_PORT": str(app_settings.port),
        "DB_NAME": app_settings.name,
        "DB_USER": app_settings.user,
        "DB_AUTH": "password",
        "DB_PASSWORD": app_settings.password,
    }
    with pytest.raises(SettingsError, match="DB_SSLROOTCERT"):
        Settings.from_env(env)  # verify-full is the default, and needs the bundle
    db = Database.from_settings(Settings.from_env({**env, "DB_SSLROOTCERT": ca_file}))
    assert ssl_in_use(db)[0] is True
    db.dispose()
