"""Monitoring, tracing and WAF: the Lambda functions' tracing and RDS Proxy environment,
their runtime as the packager builds it, the API's WAF and X-Ray opt-in, and the
dashboard's metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from api.jsonbody import MAX_BODY_BYTES
from dataaccess.settings import ENV_VARS, Settings
from scripts import package_lambda
from tests.infra.conftest import PSEUDO, TF_DIR, Resolver

FUNCTIONS = ("StockEventsFunction", "ReportFunction")
PROXY = "dataaccess-dev.proxy-abcdefghijkl.eu-west-1.rds.amazonaws.com"
PROXY_READER = "dataaccess-dev-ro.endpoint.proxy-abcdefghijkl.eu-west-1.rds.amazonaws.com"
DAEMON_IMAGE = "public.ecr.aws/xray/aws-xray-daemon@sha256:" + "0123456789abcdef" * 4
ALB = "app/dataa-LoadB-1A2B3C4D5E6F/0123456789abcdef"
CLUSTER = "dataaccess-dev-aurora-cluster-abcdefghijkl"
# Lambda's names for the machines wheels are built for.
LAMBDA_ARCHITECTURES = {"x86_64": "x86_64", "aarch64": "arm64"}


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (found,) = resources(template, type_).values()
    return found


def function_env(resolver: Resolver, function: str) -> dict[str, Any]:
    props = resolver.templates["lambda"]["Resources"][function]["Properties"]
    return resolver.resolve("lambda", props["Environment"]["Variables"])


def allowed(template: dict[str, Any], parameter: str, value: str) -> bool:
    """Whether CloudFormation would accept `value` for a String parameter's pattern."""
    return re.fullmatch(template["Parameters"][parameter]["AllowedPattern"], value) is not None


# --- Lambda: runtime as packaged ---------------------------------------------------


def test_runtime_and_architecture_are_exactly_what_the_packager_builds(templates):
    """scripts/package_lambda.py builds for one interpreter and one platform: the zip's
    compiled wheels (psycopg2) run on nothing else."""
    params = templates["lambda"]["Parameters"]
    machine = package_lambda.TARGET_MARKERS["platform_machine"]
    assert package_lambda.PLATFORM.endswith(f"_{machine}")  # the wheels and the markers agree
    assert package_lambda.TARGET_MARKERS["python_version"] == package_lambda.RUNTIME
    runtime = f"python{package_lambda.RUNTIME}"
    architecture = LAMBDA_ARCHITECTURES[machine]
    assert params["Runtime"]["AllowedValues"] == [runtime]
    assert params["Architecture"]["AllowedValues"] == [architecture]
    assert (params["Runtime"]["Default"], params["Architecture"]["Default"]) == (
        runtime,
        architecture,
    )
    for function in FUNCTIONS:
        props = templates["lambda"]["Resources"][function]["Properties"]
        assert props["Runtime"] == {"Ref": "Runtime"}
        assert props["Architectures"] == [{"Ref": "Architecture"}]


# --- Lambda: tracing ---------------------------------------------------------------


@pytest.mark.parametrize(("tracing", "disabled"), [(None, None), ("PassThrough", "true")])
def test_functions_trace_actively_by_default_and_skip_the_sdk_when_passed_through(
    templates, tracing, disabled
):
    given = {} if tracing is None else {"Tracing": tracing}
    resolver = Resolver(templates, {"lambda": given})
    for function in FUNCTIONS:
        props = resolver.resolve("lambda", templates["lambda"]["Resources"][function]["Properties"])
        assert props["TracingConfig"] == {"Mode": tracing or "Active"}
        # The handler builds no Tracer (so imports no X-Ray SDK) when this says so.
        assert props["Environment"]["Variables"].get("POWERTOOLS_TRACE_DISABLED") == disabled


# --- Lambda: RDS Proxy -------------------------------------------------------------


def test_functions_connect_to_the_cluster_without_a_proxy(templates, resolver):
    for function in FUNCTIONS:
        env = function_env(resolver, function)
        assert env["DB_HOST"] == "<Cluster.Endpoint.Address>"
        assert env["DB_READER_HOST"] == "<Cluster.ReadEndpoint.Address>"
        assert "DB_PROXY" not in env
        assert "DB_IAM_HOST" not in env


@pytest.mark.parametrize(("reader", "expected_reader"), [("", PROXY), (PROXY_READER, PROXY_READER)])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_go_through_the_proxy_when_it_is_given(
    templates, tmp_path, function, reader, expected_reader
):
    resolver = Resolver(
        templates, {"lambda": {"DbProxyEndpoint": PROXY, "DbProxyReaderEndpoint": reader}}
    )
    env = function_env(resolver, function)
    assert env["DB_HOST"] == PROXY
    assert env["DB_READER_HOST"] == expected_reader
    assert env["DB_PROXY"] == "true"
    # Tokens are signed for the host connected to: the proxy's, with no DB_IAM_HOST.
    assert "DB_IAM_HOST" not in env
    assert "DB_PROXY" in ENV_VARS, "dataaccess.settings does not read DB_PROXY (yet)"
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    values = {k: str(v) for k, v in env.items()} | {"DB_SSLROOTCERT": str(bundle)}
    settings = Settings.from_env(values)
    assert (settings.host, settings.reader_host, settings.proxy) == (PROXY, expected_reader, True)
    assert settings.iam_host is None


def test_the_proxy_endpoints_are_host_names(templates):
    lambda_ = templates["lambda"]
    for parameter in ("DbProxyEndpoint", "DbProxyReaderEndpoint"):
        assert lambda_["Parameters"][parameter]["Default"] == ""
        assert allowed(lambda_, parameter, PROXY_READER)
        assert not allowed(lambda_, parameter, f"postgresql://{PROXY}:5432")


# --- API: WAF ----------------------------------------------------------------------


def test_waf_guards_the_load_balancer_with_managed_rules_and_a_rate_limit(templates, resolver):
    api = templates["ecs-api"]
    acl = only(api, "AWS::WAFv2::WebACL")["Properties"]
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    priorities = [rule["Priority"] for rule in acl["Rules"]]
    assert len(set(priorities)) == len(priorities)

    (rate,) = [r for r in rules.values() if "RateBasedStatement" in r["Statement"]]
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["Limit"] == {"Ref": "RateLimitPer5Min"}
    assert api["Parameters"]["RateLimitPer5Min"]["Default"] == 2000
    assert (statement["AggregateKeyType"], statement["EvaluationWindowSec"]) == ("IP", 300)
    assert rate["Action"] == {"Block": {}}
    assert rate["Priority"] == min(priorities), "the cheap rate limit runs first"

    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]: r
        for r in rules.values()
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert set(managed) == {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesSQLiRuleSet",
    }
    for rule in managed.values():
        assert rule["Statement"]["ManagedRuleGroupStatement"]["VendorName"] == "AWS"
        assert rule["OverrideAction"] == {"None": {}}, "the groups block, not just count"

    # Every rule and the ACL itself report metrics and samples, under distinct names.
    configs = [acl["VisibilityConfig"], *(r["VisibilityConfig"] for r in acl["Rules"])]
    for config in configs:
        assert config["CloudWatchMetricsEnabled"] is True
        assert config["SampledRequestsEnabled"] is True
    names = [resolver.resolve("ecs-api", c["MetricName"]) for c in configs]
    assert len(set(names)) == len(names)

    association = only(api, "AWS::WAFv2::WebACLAssociation")["Properties"]
    assert association["ResourceArn"] == {"Ref": "LoadBalancer"}
    assert association["WebACLArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}


def test_bodies_the_api_accepts_are_counted_not_blocked_by_the_8_kb_size_rule(templates):
    acl = only(templates["ecs-api"], "AWS::WAFv2::WebACL")["Properties"]
    (common,) = [
        r["Statement"]["ManagedRuleGroupStatement"]
        for r in acl["Rules"]
        if r["Statement"].get("ManagedRuleGroupStatement", {}).get("Name")
        == "AWSManagedRulesCommonRuleSet"
    ]
    overrides = {o["Name"]: o["ActionToUse"] for o in common["RuleActionOverrides"]}
    # The override exists because the API takes larger bodies than the rule allows.
    assert MAX_BODY_BYTES > 8 * 1024
    assert overrides == {"SizeRestrictions_BODY": {"Count": {}}}


def test_waf_logs_what_it_blocked_or_counted_encrypted_and_without_credentials(templates, resolver):
    api = templates["ecs-api"]
    logging = only(api, "AWS::WAFv2::LoggingConfiguration")["Properties"]
    assert logging["ResourceArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}
    ((destination,),) = [logging["LogDestinationConfigs"]]
    group_name = destination["Fn::GetAtt"][0]
    group = resolver.resolve("ecs-api", api["Resources"][group_name]["Properties"])
    assert group["LogGroupName"].startswith("aws-waf-logs-")  # WAF accepts no other name
    assert "dataaccess-dev" in group["LogGroupName"]  # the key policy's condition
    assert group["RetentionInDays"] == 365
    key = api["Resources"][group_name]["Properties"]["KmsKeyId"]
    assert key == {"Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${EnvironmentName}-KmsKeyArn"}}
    redacted = {f["SingleHeader"]["Name"] for f in logging["RedactedFields"]}
    assert {"authorization", "cookie"} <= redacted
    kept = logging["LoggingFilter"]
    assert kept["DefaultBehavior"] == "DROP"
    (keep,) = kept["Filters"]
    assert keep["Behavior"] == "KEEP"
    actions = {c["ActionCondition"]["Action"] for c in keep["Conditions"]}
    assert actions == {"BLOCK", "COUNT"}


# --- API: X-Ray opt-in -------------------------------------------------------------


def api_containers(resolver: Resolver) -> dict[str, dict[str, Any]]:
    task = only(resolver.templates["ecs-api"], "AWS::ECS::TaskDefinition")
    containers = resolver.resolve("ecs-api", task["Properties"]["ContainerDefinitions"])
    return {c["Name"]: c for c in containers}


def test_api_tasks_run_no_daemon_unless_tracing_is_enabled(templates, resolver):
    assert set(api_containers(resolver)) == {"api"}
    assert templates["ecs-api"]["Parameters"]["EnableTracing"]["Default"] == "false"


def test_enabled_tracing_adds_a_pinned_non_essential_daemon_on_the_sdk_default_port(templates):
    resolver = Resolver(
        templates, {"ecs-api": {"EnableTracing": "true", "XRayDaemonImage": DAEMON_IMAGE}}
    )
    assert resolver.refusals("ecs-api") == []
    containers = api_containers(resolver)
    assert set(containers) == {"api", "xray-daemon"}
    daemon = containers["xray-daemon"]
    assert daemon["Image"] == DAEMON_IMAGE
    assert daemon["Essential"] is False
    assert daemon["ReadonlyRootFilesystem"] is True
    # 127.0.0.1:2000 over UDP is the X-Ray SDK's default: the API needs no variable.
    assert daemon["PortMappings"] == [{"ContainerPort": 2000, "Protocol": "udp"}]
    assert daemon["LogConfiguration"]["Options"]["awslogs-stream-prefix"] == "xray-daemon"
    assert containers["api"]["Essential"] is True


def test_the_daemon_image_must_be_given_and_pinned_by_digest(templates):
    resolver = Resolver(templates, {"ecs-api": {"EnableTracing": "true"}})
    assert resolver.refusals("ecs-api") == [
        "EnableTracing=true needs XRayDaemonImage (an image pinned by digest)"
    ]
    api = templates["ecs-api"]
    assert allowed(api, "XRayDaemonImage", DAEMON_IMAGE)
    assert allowed(api, "XRayDaemonImage", "")
    assert allowed(
        api,
        "XRayDaemonImage",
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/mirror/xray@sha256:" + "ab" * 32,
    )
    assert not allowed(api, "XRayDaemonImage", "public.ecr.aws/xray/aws-xray-daemon:latest")
    assert not allowed(api, "XRayDaemonImage", "amazon/aws-xray-daemon")


def test_the_roles_that_trace_may_write_to_xray():
    """The functions (Tracing=Active) and the API task role (its daemon uploads with it),
    each attached once: two attachments of one policy detach it for both when one goes."""
    main = (TF_DIR / "main.tf").read_text()
    blocks = re.findall(r'resource "aws_iam_role_policy_attachment" "\w+" \{.*?\n\}', main, re.S)
    xray = [b for b in blocks if "policy/AWSXRayDaemonWriteAccess" in b]
    roles = [role for b in xray for role in re.findall(r"aws_iam_role\.(\w+)\.name", b)]
    assert sorted(roles) == ["api_task", "report", "stock_events"]


# --- Dashboard ---------------------------------------------------------------------


@pytest.fixture
def dashboard(templates) -> dict[str, Any]:
    """The dashboard's body, as CloudFormation would render it for these names."""
    resolver = Resolver(
        templates, {"dashboard": {"LoadBalancerFullName": ALB, "DbClusterIdentifier": CLUSTER}}
    )
    props = only(templates["dashboard"], "AWS::CloudWatch::Dashboard")["Properties"]
    return json.loads(resolver.resolve("dashboard", props["DashboardBody"]))


def plotted(body: dict[str, Any]) -> set[tuple[str, str, tuple[tuple[str, str], ...], str]]:
    """(namespace, metric, dimensions, statistic) of every metric the widgets plot."""
    found = set()
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        props = widget["properties"]
        assert props["region"] == PSEUDO["AWS::Region"]
        for line in props["metrics"]:
            options = line[-1] if isinstance(line[-1], dict) else {}
            namespace, metric, *rest = line[:-1] if options else line
            dimensions = tuple(zip(rest[::2], rest[1::2], strict=True))
            found.add((namespace, metric, dimensions, options.get("stat", props.get("stat"))))
    return found


def test_dashboard_shows_the_load_balancer_and_the_waf(dashboard, templates, resolver):
    metrics = plotted(dashboard)
    alb = (("LoadBalancer", ALB),)
    assert ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", alb, "Sum") in metrics
    assert ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", alb, "Sum") in metrics
    for percentile in ("p50", "p99"):
        assert ("AWS/ApplicationELB", "TargetResponseTime", alb, percentile) in metrics
    # The ALB's dimension is what ecs-api outputs; the deploy passes it through.
    output = templates["ecs-api"]["Outputs"]["LoadBalancerFullName"]["Value"]
    assert output == {"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]}
    assert allowed(templates["dashboard"], "LoadBalancerFullName", ALB)
    acl = only(templates["ecs-api"], "AWS::WAFv2::WebACL")["Properties"]
    waf = (("WebACL", resolver.resolve("ecs-api", acl["Name"])), ("Region", "eu-west-1"))
    assert ("AWS/WAFV2", "BlockedRequests", (*waf, ("Rule", "ALL")), "Sum") in metrics


def test_dashboard_shows_both_functions_and_the_queues_by_their_real_names(
    dashboard, templates, resolver
):
    metrics = plotted(dashboard)
    lambda_ = templates["lambda"]["Resources"]
    for function in FUNCTIONS:
        name = resolver.resolve("lambda", lambda_[function]["Properties"]["FunctionName"])
        dimension = (("FunctionName", name),)
        assert ("AWS/Lambda", "Errors", dimension, "Sum") in metrics
        assert ("AWS/Lambda", "Throttles", dimension, "Sum") in metrics
        assert any(m[:3] == ("AWS/Lambda", "Duration", dimension) for m in metrics)
    queue = resolver.resolve("lambda", lambda_["StockEventsQueue"]["Properties"]["QueueName"])
    dlq = resolver.resolve(
        "lambda", lambda_["StockEventsDeadLetterQueue"]["Properties"]["QueueName"]
    )
    assert (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        (("QueueName", queue),),
        "Maximum",
    ) in metrics
    assert (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        (("QueueName", dlq),),
        "Maximum",
    ) in metrics


def test_dashboard_shows_aurora_capacity_connections_and_deadlocks(dashboard, templates):
    metrics = plotted(dashboard)
    cluster = (("DBClusterIdentifier", CLUSTER),)
    for metric in ("ServerlessDatabaseCapacity", "DatabaseConnections", "Deadlocks"):
        assert any(m[:3] == ("AWS/RDS", metric, cluster) for m in metrics), metric
    assert allowed(templates["dashboard"], "DbClusterIdentifier", CLUSTER)
    assert not allowed(templates["dashboard"], "DbClusterIdentifier", "Upper-Case")


def test_dashboard_body_is_json_with_nothing_left_to_substitute(dashboard):
    assert "${" not in json.dumps(dashboard)
    assert len(dashboard["widgets"]) >= 9
