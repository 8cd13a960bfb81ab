"""cfn/network.yaml: how the private subnets reach AWS (NAT, or VPC endpoints), the S3
prefix list that image pulls need when egress is narrowed, and the VPC flow logs."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from tests.infra.conftest import Resolver

VPC_CIDR = "10.20.0.0/16"
S3_PREFIX_LIST = "pl-6ea54007"
ROUTE_TABLES = "rtb-0aaa1111bbbb2222c,rtb-0ddd3333eeee4444f"
NAT = {"VpcCidr": VPC_CIDR, "S3PrefixListId": S3_PREFIX_LIST}
ENDPOINTS = NAT | {
    "PrivateEgress": "endpoints",
    "AwsApiEgressCidr": VPC_CIDR,
    "PrivateRouteTableIds": ROUTE_TABLES,
}
# What something in the private subnets calls: ECS pulls and logs (API, migration),
# the migration's injected secret, SDK identity, stock
# event producers, X-Ray. Not rds (IAM tokens are signed locally) nor kms.
INTERFACE_SERVICES = {"secretsmanager", "logs", "ecr.api", "ecr.dkr", "sts", "sqs", "xray"}


def network_with(templates, parameters: dict[str, Any]) -> Resolver:
    return Resolver(templates, {"network": parameters})


def active(resolver: Resolver, type_: str) -> dict[str, dict[str, Any]]:
    return {
        name: resolver.resolve("network", r["Properties"])
        for name, r in resolver.active("network").items()
        if r["Type"] == type_
    }


def egress_of(resolver: Resolver, group: str) -> list[dict[str, Any]]:
    """Every egress rule of a group in effect with these parameters: inline and separate."""
    resources = resolver.active("network")
    rules = list(resolver.resolve("network", resources[group]["Properties"])["SecurityGroupEgress"])
    for resource in resources.values():
        if resource["Type"] == "AWS::EC2::SecurityGroupEgress":
            props = resolver.resolve("network", resource["Properties"])
            if resource["Properties"]["GroupId"] == {"Ref": group}:
                rules.append(props)
    return rules


def image_pulling_groups(templates) -> set[str]:
    """The network groups tasks that pull an image run in: the API service's (and the
    migration task's, which the deploy runs in the same group)."""
    (service,) = (
        r for r in templates["ecs-api"]["Resources"].values() if r["Type"] == "AWS::ECS::Service"
    )
    imported = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"
    ]
    suffixes = {g["Fn::ImportValue"]["Fn::Sub"].rsplit("-", 1)[1] for g in imported}
    outputs = templates["network"]["Outputs"]
    return {outputs[s]["Value"]["Ref"] for s in suffixes}


# --- NAT or endpoints -----------------------------------------------------------------


def test_nat_is_the_default_and_creates_no_endpoint(templates):
    params = templates["network"]["Parameters"]
    assert params["PrivateEgress"]["Default"] == "nat"
    assert set(params["PrivateEgress"]["AllowedValues"]) == {"nat", "endpoints"}
    nat = network_with(templates, NAT)
    assert active(nat, "AWS::EC2::VPCEndpoint") == {}
    assert "EndpointSecurityGroup" not in nat.active("network")
    assert nat.refusals("network") == []


def test_endpoints_are_one_per_called_service_private_and_behind_their_group(templates):
    resolver = network_with(templates, ENDPOINTS)
    endpoints = active(resolver, "AWS::EC2::VPCEndpoint")
    interface = {
        props["ServiceName"].removeprefix("com.amazonaws.eu-west-1."): props
        for props in endpoints.values()
        if props["VpcEndpointType"] == "Interface"
    }
    assert set(interface) == INTERFACE_SERVICES
    for props in interface.values():
        assert props["PrivateDnsEnabled"] is True
        assert props["SubnetIds"] == ["<PrivateSubnetIds>"]
        assert props["SecurityGroupIds"] == ["<EndpointSecurityGroup>"]
        assert props["VpcId"] == "<VpcId>"
    (gateway,) = [p for p in endpoints.values() if p["VpcEndpointType"] == "Gateway"]
    assert gateway["ServiceName"] == "com.amazonaws.eu-west-1.s3"
    assert gateway["RouteTableIds"] == ROUTE_TABLES.split(",")
    assert resolver.refusals("network") == []


def test_endpoint_group_admits_https_from_the_app_groups_only(templates):
    resolver = network_with(templates, ENDPOINTS)
    group = resolver.active("network")["EndpointSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group, "inline rules would bypass this check"
    assert [r["CidrIp"] for r in group["SecurityGroupEgress"]] == ["127.0.0.1/32"]
    ingress = [
        p
        for p in active(resolver, "AWS::EC2::SecurityGroupIngress").values()
        if p["GroupId"] == "<EndpointSecurityGroup>"
    ]
    # The migration task runs in the API group.
    assert {p["SourceSecurityGroupId"] for p in ingress} == {
        "<ApiSecurityGroup>",
        "<LambdaSecurityGroup>",
    }
    for rule in ingress:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)
        assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & set(rule)


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        (ENDPOINTS | {"PrivateRouteTableIds": ""}, "PrivateRouteTableIds"),
        (ENDPOINTS | {"S3PrefixListId": ""}, "S3PrefixListId"),
        (NAT | {"AwsApiEgressCidr": VPC_CIDR, "S3PrefixListId": ""}, "CannotPullContainerError"),
    ],
)
def test_rules_refuse_egress_that_cannot_pull_images(templates, parameters, refused):
    refusals = network_with(templates, parameters).refusals("network")
    assert refusals
    assert any(refused in r for r in refusals), refusals


# --- Issue 14: image layers come from S3 ------------------------------------------------


@pytest.mark.parametrize(
    "parameters",
    [
        NAT | {"AwsApiEgressCidr": VPC_CIDR},  # the platform's own endpoints, no NAT
        ENDPOINTS,
    ],
    ids=["narrowed-nat", "endpoints"],
)
def test_groups_that_pull_images_reach_s3_whenever_egress_is_narrowed(templates, parameters):
    """With egress limited to the VPC CIDR, ECR's layer downloads from S3 (through the
    gateway endpoint, at S3's public addresses) were blocked: CannotPullContainerError.
    Every group an image-pulling task runs in needs 443 to the S3 prefix list then."""
    resolver = network_with(templates, parameters)
    assert resolver.refusals("network") == []
    groups = image_pulling_groups(templates)
    assert groups == {"ApiSecurityGroup"}
    for group in groups:
        rules = egress_of(resolver, group)
        https = [r for r in rules if r.get("FromPort") == 443 and r.get("ToPort") == 443]
        assert "0.0.0.0/0" not in [r.get("CidrIp") for r in https]
        assert S3_PREFIX_LIST in [r.get("DestinationPrefixListId") for r in https], (group, rules)


def test_the_lambda_group_pulls_no_image_and_gets_no_s3_rule(templates):
    rules = egress_of(network_with(templates, ENDPOINTS), "LambdaSecurityGroup")
    assert not [r for r in rules if "DestinationPrefixListId" in r]


def test_the_deploy_looks_the_prefix_list_up_rather_than_hard_coding_it(templates):
    param = templates["network"]["Parameters"]["S3PrefixListId"]
    assert param["Default"] == ""
    assert "describe-managed-prefix-lists" in param["Description"]


# --- Flow logs --------------------------------------------------------------------------


def test_flow_logs_record_the_vpc_into_an_encrypted_retained_group(templates):
    resolver = network_with(templates, NAT)
    resources = resolver.active("network")
    (flow_log,) = active(resolver, "AWS::EC2::FlowLog").values()
    raw = next(r for r in resources.values() if r["Type"] == "AWS::EC2::FlowLog")["Properties"]
    assert (flow_log["ResourceType"], flow_log["ResourceId"]) == ("VPC", "<VpcId>")
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "cloud-watch-logs"
    assert raw["LogGroupName"] == {"Ref": "FlowLogGroup"}
    assert raw["DeliverLogsPermissionArn"] == {"Fn::GetAtt": ["FlowLogRole", "Arn"]}
    group = resources["FlowLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "FlowLogRetentionDays"}
    assert group["KmsKeyId"] == {
        "Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${EnvironmentName}-KmsKeyArn"}
    }


def test_the_key_policy_lets_cloudwatch_logs_encrypt_the_flow_log_group(templates, resolver):
    group = templates["network"]["Resources"]["FlowLogGroup"]["Properties"]
    name = resolver.resolve("network", group["LogGroupName"])
    key = templates["secrets"]["Resources"]["DataKey"]["Properties"]["KeyPolicy"]
    (logs,) = [
        s
        for s in key["Statement"]
        if s["Principal"].get("Service") == {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}
    ]
    context = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    pattern = resolver.resolve("secrets", context)
    arn = f"arn:aws:logs:eu-west-1:111122223333:log-group:{name}"
    assert fnmatch.fnmatchcase(arn, pattern), (arn, pattern)


def test_flow_log_role_is_for_the_flow_logs_service_and_writes_one_group(templates):
    role = templates["network"]["Resources"]["FlowLogRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert "vpc-flow-log/*" in trust["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert "ManagedPolicyArns" not in role
    (policy,) = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert set(statement["Action"]) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    }
    assert statement["Resource"] == {"Fn::GetAtt": ["FlowLogGroup", "Arn"]}


def test_flow_logs_can_be_left_to_the_platform(templates):
    off = network_with(templates, NAT | {"EnableFlowLogs": "false"})
    kinds = {r["Type"] for r in off.active("network").values()}
    assert not kinds & {"AWS::EC2::FlowLog", "AWS::Logs::LogGroup", "AWS::IAM::Role"}
