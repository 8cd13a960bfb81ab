"""A local stand-in for an RDS endpoint with IAM authentication, in front of a local cluster.

Per client connection (one asyncio task on the endpoint's own thread):

1. Startup. An SSLRequest is answered 'S' and TLS is terminated here with the
   cluster's certificate, so `sslmode=verify-full` verifies it as it verifies
   the cluster. With TLS configured, a session that did not ask for it is refused
   before any password is asked for (RDS with `rds.force_ssl`): the token would
   travel in clear text. GSSENCRequest is answered 'N'; a CancelRequest is passed
   to the server (the key in it is the server's).
2. IAM roles (`logins`): AuthenticationCleartextPassword, as RDS asks of a role
   granted rds_iam; the PasswordMessage must be a token that `verify_token`
   accepts for this endpoint, this user and now. Otherwise: SQLSTATE 28000,
   `PAM authentication failed for user "<user>"`, RDS's words, and the reason
   goes to the log (never the token).
3. Accepted: log in to the server as that user with its local password (SCRAM),
   with the client's own startup parameters; relay the server's
   AuthenticationOk and everything after it, then bytes both ways.
   Any other role is relayed to the server's own password check, as RDS does
   for a role without rds_iam.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

from . import pgwire
from .tokens import CLOCK_SKEW, Endpoint, IamKey, TokenRefused, masked, verify_token

log = logging.getLogger("scripts.localiam")

_CHUNK = 65536
_TIMEOUT = 30.0  # seconds a client or the server may take over one step of a login


def cluster_tls(cert_file: str | Path | None) -> ssl.SSLContext | None:
    """TLS with a local cluster's certificate and key (scripts/localpg.py keeps them together).

    None when the cluster has no TLS (no openssl on the machine): the endpoint then
    answers 'N' to SSLRequest and accepts plain connections, like the cluster.
    """
    if cert_file is None:
        return None
    cert = Path(cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # As root the key belongs to the server's OS user, owner-only: root reads it anyway.
    context.load_cert_chain(cert, cert.with_name("server.key"))
    return context


class LocalIamEndpoint:
    """An RDS-like endpoint `host`:`port` (listening on 127.0.0.1) in `region`, in front of
    the server at `upstream`.

    `logins` maps each IAM role (granted rds_iam) to its password on the local
    server, known only to this endpoint; `keys` are the access keys it trusts.
    `clock` is the endpoint's idea of now (epoch seconds). `accepted` and
    `refused` count IAM logins.
    """

    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        logins: Mapping[str, str],
        keys: Iterable[IamKey],
        region: str,
        host: str = "localhost",
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        skew: float = CLOCK_SKEW,
    ) -> None:
        self.host, self.region = host, region
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self._upstream = upstream
        self._logins = dict(logins)
        self._keys = {key.access_key_id: key for key in keys}
        self._tls = tls
        self._clock = clock
        self._skew = skew
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counts = threading.Lock()
        self._writers: set[asyncio.StreamWriter] = set()  # open sockets, on the loop's thread

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port, self.region)

    @property
    def requires_tls(self) -> bool:
        return self._tls is not None

    def start(self) -> LocalIamEndpoint:
        """Listen on a free port of 127.0.0.1 (`port`) and serve on a daemon thread."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, ready), name="localiam", daemon=True
        )
        self._thread.start()
        self.port = ready.result(timeout=10)
        return self

    def close(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> LocalIamEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the event loop ------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[int]) -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        except OSError as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(server.sockets[0].getsockname()[1])
        try:
            loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            # A socket still closing (a TLS close_notify under way) is cut short: an
            # abort closes it on the loop's next turns, which must come before it stops.
            for writer in self._writers:
                writer.transport.abort()
            for _ in range(3):
                loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(server.wait_closed())
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._session(reader, writer)
        except (OSError, EOFError, ssl.SSLError, pgwire.ProtocolError, TimeoutError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            await self._close(writer)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        encrypted = False
        while True:
            code, body = await asyncio.wait_for(pgwire.read_startup(reader), _TIMEOUT)
            if code == pgwire.SSL_REQUEST and self._tls is not None and not encrypted:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self._tls)
                encrypted = True
            elif code in (pgwire.SSL_REQUEST, pgwire.GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
            elif code == pgwire.CANCEL_REQUEST:
                await self._cancel(body)
                return
            else:
                break
        if code >> 16 != 3:
            writer.write(pgwire.error_response("0A000", f"unsupported frontend protocol {code}"))
            return
        params = pgwire.startup_params(body)
        # This end speaks 3.0 with no protocol extensions: say so, as a server does.
        extensions = [name for name in params if name.startswith("_pq_.")]
        if code != pgwire.PROTOCOL_3_0 or extensions:
            writer.write(pgwire.negotiate_protocol_version(extensions))
            params = {k: v for k, v in params.items() if k not in extensions}
        user = params.get("user", "")
        database = params.get("database", user)
        if self._tls is not None and not encrypted:
            peer = writer.get_extra_info("peername")[0]
            log.warning("refused %s: TLS is required here (rds.force_ssl) and was not asked", user)
            writer.write(
                pgwire.error_response(
                    "28000",
                    f'no pg_hba.conf entry for host "{peer}", user "{user}", '
                    f'database "{database}", no encryption',
                )
            )
            return
        if user not in self._logins:
            await self._relay_to_server(reader, writer, params)
            return
        writer.write(pgwire.authentication(pgwire.AUTH_CLEARTEXT))
        await writer.drain()
        kind, payload = await asyncio.wait_for(pgwire.read_message(reader), _TIMEOUT)
        if kind != b"p":
            raise pgwire.ProtocolError(f"expected a password message, got {kind!r}")
        try:
            key = verify_token(
                pgwire.cstring(payload),
                user=user,
                endpoint=self.endpoint,
                keys=self._keys,
                now=self._clock(),
                skew=self._skew,
            )
        except TokenRefused as exc:
            with self._counts:
                self.refused += 1
            log.warning("refused IAM login for %s at %s: %s", user, self.endpoint, exc)
            writer.write(
                pgwire.error_response("28000", f'PAM authentication failed for user "{user}"')
            )
            await writer.drain()
            return
        with self._counts:
            self.accepted += 1
        log.info(
            "accepted IAM login for %s at %s (access key %s)",
            user,
            self.endpoint,
            masked(key.access_key_id),
        )
        await self._log_in_and_relay(reader, writer, params, self._logins[user])

    async def _log_in_and_relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        params: dict[str, str],
        password: str,
    ) -> None:
        up_reader, up_writer = await self._open_upstream()
        try:
            ok, reply = await asyncio.wait_for(
                pgwire.login(up_reader, up_writer, params, password), _TIMEOUT
            )
            if not ok:
                log.error(
                    "the server refused %s's local password (is the endpoint's login for it "
                    "current?): %s",
                    params.get("user"),
                    pgwire.error_text(reply[5:]),
                )
            writer.write(reply)
            await writer.drain()
            if ok:
                await _relay(reader, writer, up_reader, up_writer)
        finally:
            await self._close(up_writer)

    async def _relay_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, params: dict[str, str]
    ) -> None:
        up_reader, up_writer = await self._open_upstream()
        try:
            up_writer.write(pgwire.startup_packet(params))
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            await self._close(up_writer)

    async def _cancel(self, body: bytes) -> None:
        _, up_writer = await self._open_upstream()
        try:
            up_writer.write(_cancel_packet(body))
            await up_writer.drain()
        finally:
            await self._close(up_writer)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self._upstream
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _TIMEOUT)
        self._writers.add(writer)
        return reader, writer

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close and wait until the socket is gone (a TLS close sends its close_notify first)."""
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)
        self._writers.discard(writer)


def _cancel_packet(body: bytes) -> bytes:
    """A CancelRequest again, from what follows its request code."""
    return (len(body) + 8).to_bytes(4, "big") + pgwire.CANCEL_REQUEST.to_bytes(4, "big") + body


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until either side closes; then both are closed."""
    pumps = [
        asyncio.ensure_future(_pump(reader, up_writer)),
        asyncio.ensure_future(_pump(up_reader, writer)),
    ]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
