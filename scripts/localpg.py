"""A throwaway local PostgreSQL cluster for `make run`, the tests and the benchmarks.

PostgreSQL refuses to run as root, so when this runs as root the server runs
as an unprivileged OS user (`postgres` when it exists, else `nobody`; override
with LOCALPG_OS_USER). TCP logins need a SCRAM password (`scram-sha-256` in
pg_hba.conf) so that credential tests prove something; the superuser's
password is random per cluster and kept in the data folder, readable by its
owner only.

    python scripts/localpg.py start [--dir DIR] [--port N]   # prints a DSN
    python scripts/localpg.py stop  [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".localpg"


def pg_bindir() -> Path:
    """Where initdb and pg_ctl live: PG_BINDIR, else pg_config --bindir, else PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    # Debian keeps the server binaries off PATH.
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    raise RuntimeError("PostgreSQL server binaries not found: install postgresql or set PG_BINDIR")


def tls_env(ca_file: str | Path | None) -> dict[str, str]:
    """DB_SSLMODE / DB_SSLROOTCERT for a local cluster: verify-full as in AWS when it has TLS."""
    if ca_file is None:
        return {"DB_SSLMODE": "disable", "DB_ALLOW_INSECURE_TLS": "true"}
    return {"DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": str(ca_file)}


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPostgres:
    """One cluster in `datadir`, listening on 127.0.0.1:`port` only."""

    root: Path
    port: int
    password: str = ""
    # Appended to the server's command-line options: a later `-c name=value` wins.
    extra_options: str = ""

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def ca_file(self) -> Path | None:
        """The server's self-signed certificate (its own CA) when TLS is on, else None."""
        cert = self.root / "server.crt"
        return cert if cert.exists() else None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def user(self) -> str:
        return SUPERUSER

    def dsn(self, dbname: str = "postgres") -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname}"
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalPostgres:
        """initdb when needed, then start the server and wait until it accepts logins."""
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "superuser.password"
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb(pwfile)
        self.password = pwfile.read_text().strip()
        if self.running():
            self.stop()  # left over from a killed run: restart on our port
        tls = self._certificate()
        log = self.root / "server.log"
        self._as_owner(
            str(pg_bindir() / "pg_ctl"),
            "start",
            "--wait",
            "--timeout=60",
            f"--pgdata={self.datadir}",
            f"--log={log}",
            "--options",
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories='{self.root}' -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            + tls
            + (f" {self.extra_options}" if self.extra_options else ""),
        )
        return self

    def clone_from(self, primary: LocalPostgres) -> LocalPostgres:
        """Make this cluster a hot standby of `primary` (pg_basebackup -R -X stream).

        Replaces any data folder here; start() then runs it as a standby. The
        superuser password is the primary's (the data is a copy); it reaches
        pg_basebackup through PGPASSWORD, never the command line, and -R records
        it in postgresql.auto.conf (inside the owner-only data folder) for the
        standby's WAL receiver.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        pwfile = self.root / "superuser.password"
        write_private(pwfile, primary.password + "\n")
        owner = _server_os_user()
        if owner is not None:
            shutil.chown(self.root, owner.pw_uid, owner.pw_gid)
            shutil.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._as_owner(
            str(pg_bindir() / "pg_basebackup"),
            f"--pgdata={self.datadir}",
            f"--host={primary.host}",
            f"--port={primary.port}",
            f"--username={primary.user}",
            "--no-password",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
            env={**os.environ, "PGPASSWORD": primary.password},
        )
        self.password = primary.password
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (idempotent); `mode` is pg_ctl's: smart, fast or immediate."""
        if self.running():
            self._as_owner(
                str(pg_bindir() / "pg_ctl"),
                "stop",
                "--wait",
                f"--mode={mode}",
                f"--pgdata={self.datadir}",
                check=False,
            )

    def promote(self) -> None:
        """Promote a hot standby to a primary; returns once it accepts writes."""
        self._as_owner(
            str(pg_bindir() / "pg_ctl"),
            "promote",
            "--wait",
            "--timeout=60",
            f"--pgdata={self.datadir}",
        )

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def _certificate(self) -> str:
        """Server options for TLS with a self-signed certificate, made once per cluster.

        The design requires sslmode=verify-full in AWS; with this the tests and
        benchmarks can exercise the same path locally (DB_SSLROOTCERT=ca_file).
        Without openssl on the machine the cluster runs without TLS.
        """
        cert, key = self.root / "server.crt", self.root / "server.key"
        if not cert.exists():
            if shutil.which("openssl") is None:
                return ""
            # The key file exists, owner-only, before openssl writes the key into it.
            write_private(key, "")
            subprocess.run(
                [
                    "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "3650",
                    "-subj", "/CN=localpg",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                ],
                capture_output=True,
                check=True,
            )  # fmt: skip
            owner = _server_os_user()
            if owner is not None:
                shutil.chown(key, owner.pw_uid, owner.pw_gid)
            cert.chmod(0o644)
        return f" -c ssl=on -c ssl_cert_file='{cert}' -c ssl_key_file='{key}'"

    def _initdb(self, pwfile: Path) -> None:
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        password = secrets.token_urlsafe(24)
        write_private(pwfile, password + "\n")
        owner = _server_os_user()
        if owner is not None:
            # The server's OS user must own the data folder and read the password file once.
            shutil.chown(self.root, owner.pw_uid, owner.pw_gid)
            shutil.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._as_owner(
            str(pg_bindir() / "initdb"),
            f"--pgdata={self.datadir}",
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _as_owner(self, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> None:
        owner = _server_os_user()
        argv = list(cmd) if owner is None else ["runuser", "-u", owner.pw_name, "--", *cmd]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/", env=env)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{result.stdout}{result.stderr}")


def _server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("LOCALPG_OS_USER")
    for candidate in [name] if name else ["postgres", "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(candidate)
    raise RuntimeError(f"no unprivileged OS user to run PostgreSQL as (tried {candidate})")


def usable_root(preferred: Path) -> Path:
    """`preferred`, unless the server's OS user cannot reach it; then a fresh temp folder.

    As root, the server runs as another user, which needs to traverse every
    parent folder: a checkout under a 0700 folder (e.g. from mktemp -d) fails that.
    """
    owner = _server_os_user()
    if owner is None:
        return preferred
    created = not preferred.exists()
    preferred.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["runuser", "-u", owner.pw_name, "--", "test", "-x", str(preferred)], check=False
    )
    if probe.returncode == 0:
        return preferred
    if created:
        preferred.rmdir()
    fallback = Path(tempfile.mkdtemp(prefix="localpg-"))
    shutil.chown(fallback, owner.pw_uid, owner.pw_gid)
    print(f"note: {preferred} is not reachable by OS user {owner.pw_name}; using {fallback}")
    return fallback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster folder")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)
    cluster = LocalPostgres(usable_root(args.dir), args.port or free_port())
    if args.action == "stop":
        cluster.stop()
        return 0
    cluster.start()
    print(f"started in {cluster.root} on {cluster.host}:{cluster.port}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
