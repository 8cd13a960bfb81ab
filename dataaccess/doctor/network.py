"""The network links of the chain: the name resolves, and the port answers.

These run before any credential is fetched, with the standard library only, so
each failure names its own layer: a security group that drops the SYN is a
timeout here, not a "could not connect" from libpq three steps later.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from .report import Status, StepResult

_VPC_FIX = (
    "Allow inbound TCP {port} on the cluster's security group from this task's or function's "
    "security group, and check that this subnet routes to the cluster's VPC (same VPC, or a "
    "peering or transit gateway route); a Lambda function must be attached to the VPC"
)


@dataclass(frozen=True)
class Endpoint:
    """A host as configured and the address the probes reached it at."""

    host: str
    port: int
    address: str


def address_kind(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    return "public" if ip.is_global else "special-purpose"


def resolve(
    step: str, label: str, host: str, port: int, timeout: float
) -> tuple[StepResult, list[str]]:
    """getaddrinfo, bounded by `timeout` (the C call itself has no timeout of its own)."""
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome["addresses"] = list(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="doctor-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    dns_fix = (
        f"Check {label} against the cluster's endpoint (aws rds describe-db-clusters --query "
        "'DBClusters[].[Endpoint,ReaderEndpoint]'); in a VPC, enableDnsSupport and "
        "enableDnsHostnames must both be on"
    )
    if worker.is_alive():
        return StepResult(
            step,
            Status.FAIL,
            f"{label}={host}: the resolver did not answer within {timeout:g} s",
            fix="This network has no working DNS resolver: check the VPC's DHCP options set "
            "and Route 53 Resolver rules",
        ), []
    error = outcome.get("error")
    if error is not None:
        transient = isinstance(error, socket.gaierror) and error.errno == socket.EAI_AGAIN
        return StepResult(
            step,
            Status.FAIL,
            f"{label}={host} does not resolve: {error}",
            fix=(
                "The resolver could not answer (temporary failure): check the VPC's DNS "
                "resolver and re-run"
                if transient
                else dns_fix
            ),
            details={"host": host},
        ), []
    addresses: list[str] = outcome["addresses"]
    kinds = [f"{address} ({address_kind(address)})" for address in addresses]
    notes: tuple[str, ...] = ()
    if any(address_kind(a) == "public" for a in addresses):
        notes = (
            "a public address: inside its VPC an Aurora endpoint resolves to a private one, so "
            "this runs outside the VPC (or the VPC lacks DNS hostnames) and the connection "
            "leaves the VPC",
        )
    return StepResult(
        step,
        Status.PASS,
        f"{host} resolves to {', '.join(kinds)}",
        notes=notes,
        details={"host": host, "addresses": addresses},
    ), addresses


def connect_tcp(
    step: str, host: str, addresses: list[str], port: int, timeout: float
) -> tuple[StepResult, Endpoint | None]:
    """A TCP connection to the first address that accepts one within `timeout`."""
    failures: list[tuple[str, str]] = []  # (address, kind)
    for address in addresses:
        started = time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                elapsed_ms = (time.monotonic() - started) * 1000
        except TimeoutError:
            failures.append((address, "timeout"))
            continue
        except ConnectionRefusedError:
            failures.append((address, "refused"))
            continue
        except OSError as exc:
            unreachable = exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
            failures.append((address, "unreachable" if unreachable else str(exc)))
            continue
        return StepResult(
            step,
            Status.PASS,
            f"{address}:{port} accepted a TCP connection ({elapsed_ms:.0f} ms)",
            details={"address": address, "port": port},
        ), Endpoint(host, port, address)
    address, kind = failures[0]
    if kind == "timeout":
        summary = f"no answer from {address}:{port} within {timeout:g} s (VPC connection error)"
        fix = _VPC_FIX.format(port=port)
    elif kind == "refused":
        summary = f"{address} refused port {port}: nothing listens there"
        fix = (
            "Check DB_PORT against the cluster's port, and that the cluster is available "
            "(not stopped, not still being created): aws rds describe-db-clusters"
        )
    elif kind == "unreachable":
        summary = f"no route to {address}:{port}"
        fix = _VPC_FIX.format(port=port)
    else:
        summary = f"could not connect to {address}:{port}: {kind}"
        fix = _VPC_FIX.format(port=port)
    return StepResult(
        step,
        Status.FAIL,
        summary,
        fix=fix,
        details={"failures": [f"{a}: {k}" for a, k in failures], "port": port},
    ), None
