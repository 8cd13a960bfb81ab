"""Just enough of the PostgreSQL wire protocol (version 3) to stand in front of a server's login.

The startup phase only ("Message Flow: Start-up" and "Message Formats" in the
PostgreSQL manual): startup packets and the SSL, GSS and cancel requests that
may precede them, authentication requests, password messages, error responses,
and a SCRAM-SHA-256 client (RFC 5802 / RFC 7677) for logging in upstream. After
login the stand-in relays bytes and parses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12
# PostgreSQL's own limits: a startup packet is at most 10000 bytes; no message
# of the login phase is anywhere near 1 MB (a token with a session token is ~2 KB).
MAX_STARTUP = 10_000
MAX_LOGIN_MESSAGE = 1 << 20


class ProtocolError(Exception):
    """The peer sent something that is not the PostgreSQL protocol as expected here."""


async def read_startup(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One untyped startup-phase packet: (request code or protocol version, the rest)."""
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolError(f"startup packet of {length} bytes")
    body = await reader.readexactly(length - 4)
    return struct.unpack("!i", body[:4])[0], body[4:]


def startup_params(body: bytes) -> dict[str, str]:
    """The name/value pairs of a startup packet (after its protocol version)."""
    parts = body.split(b"\0")
    # Pairs, then the terminating empty name (and the split's empty tail).
    if len(parts) < 2 or parts[-1] or parts[-2] or len(parts) % 2:
        raise ProtocolError("malformed startup parameters")
    fields = [part.decode() for part in parts[:-2]]
    return dict(zip(fields[::2], fields[1::2], strict=True))


def startup_packet(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", PROTOCOL_3_0) + b"".join(
        name.encode() + b"\0" + value.encode() + b"\0" for name, value in params.items()
    )
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(kind: bytes, payload: bytes) -> bytes:
    """A typed message: its one-byte type, its length (itself included), its payload."""
    return kind + struct.pack("!i", len(payload) + 4) + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One typed message of the login phase: (type byte, payload)."""
    header = await reader.readexactly(5)
    kind, length = header[:1], struct.unpack("!i", header[1:])[0]
    if not 4 <= length <= MAX_LOGIN_MESSAGE:
        raise ProtocolError(f"message {kind!r} of {length} bytes")
    return kind, await reader.readexactly(length - 4)


def authentication(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!i", code) + data)


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    fields = {b"S": severity, b"V": severity, b"C": sqlstate, b"M": text}
    payload = b"".join(code + value.encode() + b"\0" for code, value in fields.items())
    return message(b"E", payload + b"\0")


def error_text(payload: bytes) -> str:
    """The message field (M) of an ErrorResponse's payload."""
    for field in payload.split(b"\0"):
        if field[:1] == b"M":
            return field[1:].decode(errors="replace")
    return "(no message)"


def negotiate_protocol_version(unrecognised: list[str]) -> bytes:
    """NegotiateProtocolVersion: this end speaks 3.0 and none of the `_pq_` options asked for.

    The version goes as a whole (major << 16 | minor), as servers send it and libpq reads it.
    """
    names = b"".join(name.encode() + b"\0" for name in unrecognised)
    return message(b"v", struct.pack("!ii", PROTOCOL_3_0, len(unrecognised)) + names)


def cstring(payload: bytes) -> str:
    """A payload that is one NUL-terminated string (a PasswordMessage)."""
    if not payload.endswith(b"\0"):
        raise ProtocolError("string without its terminating NUL")
    return payload[:-1].decode(errors="replace")


async def login(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    params: dict[str, str],
    password: str,
) -> tuple[bool, bytes]:
    """Start a session upstream and answer its authentication requests with `password`.

    Returns (True, the AuthenticationOk message) once the server accepts, or
    (False, the server's ErrorResponse) when it refuses; what follows either
    (parameter statuses, key data, ReadyForQuery) stays unread in `reader`.
    """
    writer.write(startup_packet(params))
    await writer.drain()
    scram: _Scram | None = None
    while True:
        kind, payload = await read_message(reader)
        if kind == b"E":
            return False, message(kind, payload)
        if kind == b"N":  # a notice before login; not worth relaying
            continue
        if kind != b"R":
            raise ProtocolError(f"server sent {kind!r} during authentication")
        (code,) = struct.unpack("!i", payload[:4])
        data = payload[4:]
        if code == AUTH_OK:
            return True, message(kind, payload)
        if code == AUTH_CLEARTEXT:
            writer.write(message(b"p", password.encode() + b"\0"))
        elif code == AUTH_SASL:
            if b"SCRAM-SHA-256" not in data.split(b"\0"):
                raise ProtocolError("server offers no SCRAM-SHA-256")
            scram = _Scram(password)
            first = scram.client_first().encode()
            writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        elif code == AUTH_SASL_CONTINUE and scram is not None:
            writer.write(message(b"p", scram.client_final(data.decode()).encode()))
        elif code == AUTH_SASL_FINAL and scram is not None:
            scram.check_server_final(data.decode())
            continue
        else:
            raise ProtocolError(f"unsupported authentication request {code}")
        await writer.drain()


class _Scram:
    """The client side of SCRAM-SHA-256 without channel binding (the upstream link is loopback).

    The user name goes in the startup packet; PostgreSQL ignores SCRAM's, so it
    is left empty, as libpq does.
    """

    def __init__(self, password: str) -> None:
        self._password = password.encode()
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = f"n=,r={self._nonce}"
        self._auth_message = b""
        self._salted = b""

    def client_first(self) -> str:
        return "n,," + self._first_bare

    def client_final(self, server_first: str) -> str:
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        if not fields.get("r", "").startswith(self._nonce):
            raise ProtocolError("SCRAM: the server's nonce does not extend ours")
        salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
        self._salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, iterations)
        client_key = _hmac(self._salted, b"Client Key")
        without_proof = f"c=biws,r={fields['r']}"  # biws: base64 of the GS2 header "n,,"
        self._auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        client_signature = _hmac(hashlib.sha256(client_key).digest(), self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def check_server_final(self, server_final: str) -> None:
        expected = _hmac(_hmac(self._salted, b"Server Key"), self._auth_message)
        given = server_final.partition("v=")[2].encode()
        if not hmac.compare_digest(base64.b64encode(expected), given):
            raise ProtocolError("SCRAM: the server's signature does not verify")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()
