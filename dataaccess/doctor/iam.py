"""Why RDS refused an IAM token ("PAM authentication failed"), as far as AWS will say.

RDS says nothing but "PAM authentication failed for user X" whatever the cause:
the login role is not in `rds_iam`, the policy's `dbuser` is not exactly the
role name, the policy names another cluster's (or the proxy's) resource id, IAM
authentication is off on the cluster, the signer's credentials expired, or the
token was signed for another endpoint. This module looks up what it can (the
caller, the cluster or proxy that owns the endpoint) and prints the exact
`rds-db:connect` resource the policy must allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..settings import Settings, is_proxy_endpoint
from .aws import AwsError, caller_identity, client_config

_CLUSTER_ID = "<cluster-resource-id>"
_PROXY_ID = "<proxy-resource-id>"


@dataclass
class IamHint:
    """The fix (one sentence), what the lookups found, and the exact resource ARN."""

    fix: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _through_proxy(settings: Settings, host: str) -> bool:
    return settings.proxy or is_proxy_endpoint(host)


def iam_login_hint(settings: Settings, signed_host: str, user: str) -> IamHint:
    """Everything that can make RDS refuse a token for `user` signed for `signed_host`."""
    assert settings.region is not None
    session = boto3.session.Session(region_name=settings.region)
    config = client_config(settings)
    notes: list[str] = []
    if signed_host != settings.host:
        notes.append(
            f"tokens are signed for DB_IAM_HOST={signed_host} but the connection goes to "
            f"DB_HOST={settings.host}: unless DB_HOST is a tunnel or proxy to {signed_host}, "
            "unset DB_IAM_HOST"
        )
    account, principal = caller_identity(session, config)
    if account is None:
        notes.append(f"the signing principal is {principal}")
    proxy = _through_proxy(settings, signed_host)
    found = (_find_proxy if proxy else _find_cluster)(session, config, signed_host)
    notes.extend(found.notes)
    partition = session.get_partition_for_region(settings.region)
    resource_id = found.resource_id or (_PROXY_ID if proxy else _CLUSTER_ID)
    arn = (
        f"arn:{partition}:rds-db:{settings.region}:{account or '<account-id>'}:dbuser:"
        f"{resource_id}/{user}"
    )
    who = principal if account is not None else "the role that signs the tokens"
    if found.iam_auth_enabled is False:
        fix = (
            f"Turn on IAM database authentication on cluster {found.name} "
            "(EnableIAMDatabaseAuthentication), then check that the policy allows "
            f"rds-db:connect on {arn}"
        )
    else:
        fix = (
            f"Allow rds-db:connect on {arn} for {who}, and check that {user} is a member of "
            f"rds_iam (GRANT rds_iam TO {user}; migration 0002 does it) and that the "
            f"policy's dbuser is exactly {user}"
        )
    details = {"rds_db_arn": arn, "principal": principal, "signed_for": signed_host}
    if found.name:
        details["proxy" if proxy else "cluster"] = found.name
    return IamHint(fix, notes, details)


@dataclass
class _Found:
    resource_id: str | None = None
    name: str | None = None
    iam_auth_enabled: bool | None = None
    notes: list[str] = field(default_factory=list)


def _find_cluster(session: boto3.session.Session, config: Config, host: str) -> _Found:
    try:
        pages = session.client("rds", config=config).get_paginator("describe_db_clusters")
        clusters = [c for page in pages.paginate() for c in page["DBClusters"]]
    except ClientError as exc:
        return _lookup_failed("rds:DescribeDBClusters", AwsError.of(exc), "cluster")
    except BotoCoreError as exc:
        return _Found(notes=[f"could not look up the cluster: {exc}"])
    wanted = host.lower().rstrip(".")
    for cluster in clusters:
        endpoints = {cluster.get("Endpoint"), cluster.get("ReaderEndpoint")}
        endpoints |= set(cluster.get("CustomEndpoints", []))
        if wanted in {e.lower() for e in endpoints if e}:
            name = cluster.get("DBClusterIdentifier")
            return _Found(
                resource_id=cluster.get("DbClusterResourceId"),
                name=name,
                iam_auth_enabled=cluster.get("IAMDatabaseAuthenticationEnabled"),
                notes=[
                    f"{host} is an endpoint of cluster {name} "
                    f"({cluster.get('DbClusterResourceId')})"
                ],
            )
    return _Found(
        notes=[
            f"no cluster in this account and region has the endpoint {host}: an instance "
            "endpoint, or a cluster elsewhere (its DbClusterResourceId goes in the policy)"
        ]
    )


def _find_proxy(session: boto3.session.Session, config: Config, host: str) -> _Found:
    rds = session.client("rds", config=config)
    wanted = host.lower().rstrip(".")
    try:
        proxies = [
            p
            for page in rds.get_paginator("describe_db_proxies").paginate()
            for p in page["DBProxies"]
        ]
    except ClientError as exc:
        return _lookup_failed("rds:DescribeDBProxies", AwsError.of(exc), "proxy")
    except BotoCoreError as exc:
        return _Found(notes=[f"could not look up the proxy: {exc}"])
    by_name = {p.get("DBProxyName"): p for p in proxies}
    match = next((p for p in proxies if (p.get("Endpoint") or "").lower() == wanted), None)
    if match is None:
        try:  # a custom (e.g. read-only) endpoint of a proxy
            endpoints = rds.describe_db_proxy_endpoints()["DBProxyEndpoints"]
        except (ClientError, BotoCoreError):
            endpoints = []
        owner = next((e for e in endpoints if (e.get("Endpoint") or "").lower() == wanted), None)
        match = by_name.get(owner.get("DBProxyName")) if owner else None
    if match is None:
        return _Found(notes=[f"no RDS Proxy in this account and region has the endpoint {host}"])
    arn = match.get("DBProxyArn", "")
    # arn:aws:rds:<region>:<account>:db-proxy:prx-0123456789abcdef: the policy names prx-...
    resource_id = arn.rsplit(":", 1)[-1] if arn else None
    name = match.get("DBProxyName")
    return _Found(
        resource_id=resource_id,
        name=name,
        notes=[f"{host} is an endpoint of RDS Proxy {name} ({resource_id})"],
    )


def _lookup_failed(action: str, error: AwsError, what: str) -> _Found:
    command = (
        "aws rds describe-db-clusters --query 'DBClusters[].[Endpoint,DbClusterResourceId]'"
        if what == "cluster"
        else "aws rds describe-db-proxies --query 'DBProxies[].[Endpoint,DBProxyArn]'"
    )
    reason = "was denied" if error.denied else f"failed ({error.code})"
    return _Found(
        notes=[
            f"could not look up the {what}: {action} {reason} for this principal; "
            f"the resource id is in `{command}`"
        ]
    )
