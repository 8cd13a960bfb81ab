"""The TLS link of the chain: the server starts TLS and its certificate verifies.

The probe speaks PostgreSQL's SSLRequest itself, then verifies the certificate
the way libpq's sslmode does, against the same DB_SSLROOTCERT and host name; a
failure says which CA issued the certificate and which names it lists.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

from ..settings import Settings
from .network import Endpoint
from .report import Status, StepResult

# PostgreSQL's SSLRequest: length 8, then the magic code 1234.5679.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
# OpenSSL's verify codes for "the certificate does not name this host / address".
_NAME_MISMATCH = {62, 64}
_EXPIRED = {9, 10}  # not yet valid, expired
_EXPIRY_WARNING_DAYS = 30


def check_tls(step: str, endpoint: Endpoint, settings: Settings) -> StepResult:
    """The SSLRequest, then a handshake verified as libpq's `settings.sslmode` would."""
    sslmode, timeout = settings.sslmode, float(settings.connect_timeout)
    if sslmode == "disable":
        return StepResult(step, Status.SKIP, "DB_SSLMODE=disable: the connection is not encrypted")
    verify = sslmode in ("verify-ca", "verify-full")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if verify:
        assert settings.sslrootcert is not None  # Settings requires it for verify-*
        try:
            context.load_verify_locations(cafile=settings.sslrootcert)
        except (ssl.SSLError, OSError) as exc:
            return StepResult(
                step,
                Status.FAIL,
                f"DB_SSLROOTCERT={settings.sslrootcert} is not a PEM CA bundle: {exc}",
                fix="Point DB_SSLROOTCERT at the RDS CA bundle (global-bundle.pem from "
                "https://truststore.pki.rds.amazonaws.com)",
            )
    where = f"{endpoint.address}:{endpoint.port}"
    try:
        with _ssl_socket(endpoint, context, timeout) as tls:
            version = tls.version()
            cert: dict[str, Any] = dict(tls.getpeercert() or {})
            der = tls.getpeercert(binary_form=True)
    except _NoTls as refused:
        if sslmode in ("allow", "prefer"):
            return StepResult(
                step,
                Status.WARN,
                f"{where} does not offer TLS ({refused}); DB_SSLMODE={sslmode} goes on unencrypted",
                fix="Use DB_SSLMODE=verify-full with the RDS CA bundle",
            )
        return StepResult(
            step,
            Status.FAIL,
            f"{where} did not start TLS: {refused}",
            fix="Check that DB_HOST:DB_PORT is the PostgreSQL endpoint itself (not a load "
            "balancer or another service) and that the server has ssl on",
        )
    except TimeoutError:
        return StepResult(
            step,
            Status.FAIL,
            f"{where} accepted TCP but did not answer the TLS request within {timeout:g} s",
            fix="Something other than PostgreSQL holds this address and port (a proxy or load "
            "balancer with no backend, a firewall that lets the SYN through): check "
            "DB_HOST and DB_PORT, and the cluster's status",
        )
    except ssl.SSLCertVerificationError as exc:
        return _verification_failure(step, endpoint, settings, exc)
    except (ssl.SSLError, OSError) as exc:
        return StepResult(
            step,
            Status.FAIL,
            f"the TLS handshake with {where} failed: {exc}",
            fix="Check that DB_HOST:DB_PORT is the PostgreSQL endpoint itself",
        )
    if not cert and der:
        cert = _decode(endpoint, der, timeout) or {}
    described = _describe(cert)
    checked = (
        f"verified for {endpoint.host} against {settings.sslrootcert}"
        if sslmode == "verify-full"
        else f"verified against {settings.sslrootcert} (host name not checked: {sslmode})"
        if verify
        else f"NOT verified (DB_SSLMODE={sslmode})"
    )
    result = StepResult(
        step,
        Status.PASS,
        f"{version}, certificate {checked}; {described['summary']}",
        details={"tls_version": version, **described["details"]},
    )
    days_left = described["days_left"]
    if isinstance(days_left, int) and days_left < _EXPIRY_WARNING_DAYS:
        return StepResult(
            step,
            Status.WARN,
            result.summary,
            fix=f"The server certificate expires in {days_left} days: rotate the cluster's "
            "certificate authority (aws rds modify-db-instance --ca-certificate-identifier)",
            details=result.details,
        )
    if not verify:
        return StepResult(
            step,
            Status.WARN,
            result.summary,
            fix="Use DB_SSLMODE=verify-full with the RDS CA bundle: without it any server "
            "that answers can take the login",
            details=result.details,
        )
    return result


class _NoTls(Exception):
    """The peer answered the SSLRequest with something other than 'S'."""


@contextlib.contextmanager
def _ssl_socket(
    endpoint: Endpoint, context: ssl.SSLContext, timeout: float
) -> Iterator[ssl.SSLSocket]:
    with socket.create_connection((endpoint.address, endpoint.port), timeout=timeout) as raw:
        raw.sendall(_SSL_REQUEST)
        answer = raw.recv(1)
        if answer != b"S":
            raise _NoTls(
                "the server refuses TLS (it answered N)"
                if answer == b"N"
                else "the connection closed"
                if not answer
                else f"it answered {answer!r}: not a PostgreSQL server"
            )
        with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            yield tls


def _verification_failure(
    step: str, endpoint: Endpoint, settings: Settings, exc: ssl.SSLCertVerificationError
) -> StepResult:
    cert = _fetch_unverified(endpoint, float(settings.connect_timeout))
    described = _describe(cert)
    reason = exc.verify_message or str(exc)
    summary = f"certificate verify failed: {reason}; {described['summary']}"
    if exc.verify_code in _NAME_MISMATCH:
        names = described["details"].get("names") or ["(none found)"]
        fix = (
            f"Connect by a name the certificate lists ({', '.join(names)}): DB_HOST must be the "
            "endpoint itself, not an IP address, a CNAME of your own or a tunnel's local name"
        )
    elif exc.verify_code in _EXPIRED:
        fix = (
            "The server's certificate is outside its validity period: rotate the cluster's "
            "certificate authority (--ca-certificate-identifier), or check this machine's clock"
        )
    else:
        issuer = described["details"].get("issuer") or "unknown"
        fix = (
            f"DB_SSLROOTCERT={settings.sslrootcert} does not hold the CA that issued the "
            f"server's certificate (issuer: {issuer}): use the RDS CA bundle for the region "
            "(global-bundle.pem from https://truststore.pki.rds.amazonaws.com; in the image "
            "/app/certs/rds-global-bundle.pem)"
        )
    return StepResult(
        step,
        Status.FAIL,
        summary,
        fix=fix,
        details={"verify_code": exc.verify_code, "verify_message": reason, **described["details"]},
    )


def _fetch_unverified(endpoint: Endpoint, timeout: float) -> dict[str, Any]:
    """The server's certificate, decoded, without trusting it (to say what it names)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with _ssl_socket(endpoint, context, timeout) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, _NoTls):
        return {}
    return (_decode(endpoint, der, timeout) or {}) if der else {}


def _decode(endpoint: Endpoint, der: bytes, timeout: float) -> dict[str, Any] | None:
    """Python decodes only a certificate it verified: trust this one alone, for one handshake.

    With a partial chain allowed, the leaf itself is the trust anchor, so the
    handshake verifies and getpeercert() returns the decoded fields (names,
    issuer, expiry). Host names are not checked here; the real probe did that.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cadata=der)
        with _ssl_socket(endpoint, context, timeout) as tls:
            return dict(tls.getpeercert() or {})
    except (OSError, ssl.SSLError, _NoTls, ValueError):
        return None


def _describe(cert: dict[str, Any]) -> dict[str, Any]:
    if not cert:
        return {"summary": "certificate details unavailable", "details": {}, "days_left": None}

    def name(field: str) -> str:
        parts = [f"{k}={v}" for rdn in cert.get(field, ()) for (k, v) in rdn]
        return ", ".join(
            p.replace("commonName", "CN").replace("organizationName", "O") for p in parts
        )

    names = [value for _kind, value in cert.get("subjectAltName", ())]
    not_after = cert.get("notAfter")
    days_left = None
    if not_after:
        days_left = int((ssl.cert_time_to_seconds(not_after) - time.time()) // 86400)
    subject = name("subject")
    summary = f"subject {subject or '(empty)'}, names {', '.join(names) or '(none)'}"
    if not_after:
        summary += f", valid until {not_after}"
    details: dict[str, Any] = {"subject": subject, "issuer": name("issuer"), "names": names}
    if not_after:
        details["not_after"] = not_after
    return {"summary": summary, "details": details, "days_left": days_left}
