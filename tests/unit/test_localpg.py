"""The local cluster's secrets are owner-only from the moment they exist (no database)."""

import os
import stat

from scripts.localpg import write_private


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_created_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0o000)  # the most permissive umask: the mode must not come from it
    try:
        write_private(tmp_path / "superuser.password", "s3cret\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "superuser.password") == 0o600
    assert (tmp_path / "superuser.password").read_text() == "s3cret\n"


def test_an_existing_file_is_made_owner_only_before_it_is_written(tmp_path):
    key = tmp_path / "server.key"
    key.write_text("old")
    key.chmod(0o644)
    write_private(key, "")
    assert mode(key) == 0o600
    assert key.read_text() == ""
