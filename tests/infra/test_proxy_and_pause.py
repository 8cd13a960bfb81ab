"""The optional RDS Proxy (cfn/proxy.yaml) and Serverless v2 auto-pause (cfn/aurora.yaml):
what each sets, and the combinations the templates refuse at deploy time."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.conftest import TF_DIR, Resolver


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = resources(template, type_).values()
    return found["Properties"]


def imports(node: Any, export_suffix: str) -> bool:
    return node == {
        "Fn::ImportValue": {"Fn::Sub": f"${{ProjectName}}-${{EnvironmentName}}-{export_suffix}"}
    }


# --- RDS Proxy --------------------------------------------------------------------


def test_proxy_takes_iam_tokens_only_over_tls_and_stores_no_password(templates):
    proxy = templates["proxy"]
    props = only(proxy, "AWS::RDS::DBProxy")
    assert props["EngineFamily"] == "POSTGRESQL"
    # End-to-end IAM: clients log in with tokens and the proxy logs in to the
    # cluster with its role, so there is no Secrets Manager entry (Auth) at all.
    assert props["DefaultAuthScheme"] == "IAM_AUTH"
    assert "Auth" not in props
    assert props["RequireTLS"] is True
    # Debug logging would put statement text (row values) into CloudWatch Logs.
    assert props["DebugLogging"] is False
    assert not resources(proxy, "AWS::SecretsManager::Secret")
    assert "secretsmanager" not in str(proxy).lower()


def test_proxy_role_is_terraforms_and_the_stack_creates_none(templates):
    proxy = templates["proxy"]
    assert only(proxy, "AWS::RDS::DBProxy")["RoleArn"] == {"Ref": "ProxyRoleArn"}
    assert not resources(proxy, "AWS::IAM::Role")
    assert "rds_proxy_role_arn" in proxy["Parameters"]["ProxyRoleArn"]["Description"]
    assert 'output "rds_proxy_role_arn"' in (TF_DIR / "outputs.tf").read_text()


def test_proxy_sits_in_the_private_subnets_behind_its_own_group(templates):
    proxy = templates["proxy"]
    for type_ in ("AWS::RDS::DBProxy", "AWS::RDS::DBProxyEndpoint"):
        props = only(proxy, type_)
        assert imports(props["VpcSubnetIds"]["Fn::Split"][1], "PrivateSubnetIds")
        assert [imports(g, "ProxySecurityGroupId") for g in props["VpcSecurityGroupIds"]] == [True]


def test_target_group_is_the_cluster_with_a_bounded_pool(templates, resolver: Resolver):
    proxy = templates["proxy"]
    group = only(proxy, "AWS::RDS::DBProxyTargetGroup")
    assert group["DBProxyName"] == {"Ref": "Proxy"}
    assert group["TargetGroupName"] == "default"
    (cluster,) = group["DBClusterIdentifiers"]
    assert imports(cluster, "ClusterIdentifier")
    assert templates["aurora"]["Outputs"]["ClusterIdentifier"]["Value"] == {"Ref": "Cluster"}
    pool = resolver.resolve("proxy", group["ConnectionPoolConfigurationInfo"])
    # The API, the migration and operators connect directly: the
    # proxy must leave them room under max_connections.
    assert pool["MaxConnectionsPercent"] <= 75
    assert pool["MaxIdleConnectionsPercent"] <= pool["MaxConnectionsPercent"]
    # A statement waiting for a pooled connection gives up before its function does.
    timeout = templates["lambda"]["Resources"]["StockEventsFunction"]["Properties"]["Timeout"]
    assert 0 < pool["ConnectionBorrowTimeout"] < timeout
    assert resolver.resolve("proxy", only(proxy, "AWS::RDS::DBProxy")["IdleClientTimeout"]) > 0


def test_reader_endpoint_is_read_only(templates):
    endpoint = only(templates["proxy"], "AWS::RDS::DBProxyEndpoint")
    assert endpoint["TargetRole"] == "READ_ONLY"
    assert endpoint["DBProxyName"] == {"Ref": "Proxy"}


def test_outputs_give_both_endpoints_and_the_resource_id_terraform_accepts(templates):
    outputs = templates["proxy"]["Outputs"]
    assert outputs["ProxyEndpoint"]["Value"] == {"Fn::GetAtt": ["Proxy", "Endpoint"]}
    assert outputs["ProxyReaderEndpoint"]["Value"] == {"Fn::GetAtt": ["ReaderEndpoint", "Endpoint"]}
    # prx-... is the last ":"-separated part of the proxy's ARN.
    select = outputs["ProxyResourceId"]["Value"]["Fn::Select"]
    index, (delimiter, source) = select[0], select[1]["Fn::Split"]
    assert source == {"Fn::GetAtt": ["Proxy", "DBProxyArn"]}
    arn = "arn:aws:rds:eu-west-1:111122223333:db-proxy:prx-0123456789abcdef0"
    resource_id = arn.split(delimiter)[int(index)]
    assert resource_id == "prx-0123456789abcdef0"
    variables = (TF_DIR / "variables.tf").read_text()
    validation = re.search(r'variable "proxy_resource_id".*?regex\("([^"]+)"', variables, re.S)
    assert validation
    assert re.fullmatch(validation.group(1), resource_id)


def test_only_the_functions_reach_the_proxy_and_it_reaches_only_the_database(templates):
    network = templates["network"]["Resources"]
    ingress = [
        r["Properties"]
        for r in network.values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and r["Properties"]["GroupId"] == {"Ref": "ProxySecurityGroup"}
    ]
    assert [(r["SourceSecurityGroupId"], r["FromPort"], r["ToPort"]) for r in ingress] == [
        ({"Ref": "LambdaSecurityGroup"}, 5432, 5432)
    ]
    egress = [
        r["Properties"]
        for r in network.values()
        if r["Type"] == "AWS::EC2::SecurityGroupEgress"
        and r["Properties"]["GroupId"] == {"Ref": "ProxySecurityGroup"}
    ]
    assert [(r["DestinationSecurityGroupId"], r["FromPort"]) for r in egress] == [
        ({"Ref": "DatabaseSecurityGroup"}, 5432)
    ]
    inline = network["ProxySecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert [r["CidrIp"] for r in inline] == ["127.0.0.1/32"]


# --- Auto-pause ---------------------------------------------------------------------


def aurora_with(templates, **parameters) -> Resolver:
    return Resolver(templates, {"aurora": parameters})


def test_auto_pause_is_off_by_default_and_on_with_min_capacity_0(templates):
    aurora = templates["aurora"]
    params = aurora["Parameters"]
    assert params["MinCapacity"]["Default"] == 0.5
    assert params["MinCapacity"]["MinValue"] == 0
    pause = params["SecondsUntilAutoPause"]
    assert (pause["MinValue"], pause["MaxValue"]) == (300, 86400)
    cluster = aurora["Resources"]["Cluster"]["Properties"]
    group = aurora["Resources"]["ClusterParameterGroup"]["Properties"]

    default = aurora_with(templates)
    scaling = default.resolve("aurora", cluster)["ServerlessV2ScalingConfiguration"]
    assert "SecondsUntilAutoPause" not in scaling
    assert default.resolve("aurora", group)["Parameters"]["idle_session_timeout"] == "0"

    for zero in ("0", "0.0"):
        paused = aurora_with(templates, MinCapacity=zero, SecondsUntilAutoPause=900)
        scaling = paused.resolve("aurora", cluster)["ServerlessV2ScalingConfiguration"]
        assert scaling["SecondsUntilAutoPause"] == 900
        # Idle pooled connections would keep the instances awake: the server
        # closes them well before the pause could start.
        idle_ms = int(paused.resolve("aurora", group)["Parameters"]["idle_session_timeout"])
        assert 0 < idle_ms < 300 * 1000


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({}, None),
        ({"MinCapacity": "0"}, None),
        ({"MinCapacity": "0.5", "ProxyEnabled": "true"}, None),
        ({"MinCapacity": "0", "ProxyEnabled": "true"}, "cannot be combined with RDS Proxy"),
        ({"MinCapacity": "0.0", "ProxyEnabled": "true"}, "cannot be combined with RDS Proxy"),
        ({"MinCapacity": "0", "EngineVersion": "16.2"}, "16.3 or later"),
        ({"MinCapacity": "0.5", "EngineVersion": "16.2"}, None),
    ],
)
def test_rules_refuse_what_cannot_pause(templates, parameters, refused):
    refusals = aurora_with(templates, **parameters).refusals("aurora")
    if refused is None:
        assert refusals == []
    else:
        assert len(refusals) == 1, refusals
        assert refused in refusals[0]


def test_rules_are_written_in_what_rules_may_reference(templates):
    """Rules see parameters only: no Ref to a resource, no condition."""
    parameters = set(templates["aurora"]["Parameters"])

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["Ref"]} if set(node) == {"Ref"} else set()
            assert "Condition" not in node
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    used = refs(templates["aurora"]["Rules"])
    assert used
    assert used <= parameters
    assert {"MinCapacity", "ProxyEnabled", "EngineVersion"} <= used
