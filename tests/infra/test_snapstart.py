"""SnapStart in cfn/lambda.yaml: a switch, off by default, on a runtime that has it, and
only useful because every trigger invokes a published version (the alias `live`), which
each change publishes anew."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.conftest import REPO, Resolver

FUNCTIONS = {"StockEventsFunction": "StockEvents", "ReportFunction": "Report"}
ALIAS = "live"
# What SnapStart supports among Lambda's Python runtimes (AWS: python3.12 and later).
SNAPSTART_PYTHON = (3, 12)


def of_type(resources: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if v["Type"] == type_}


def resolved(templates: dict[str, Any], snapstart: str | None) -> dict[str, dict[str, Any]]:
    """The lambda stack's resources' properties, as CloudFormation would see them."""
    given = {} if snapstart is None else {"SnapStart": snapstart}
    resolver = Resolver(templates, {"lambda": given})
    return {
        name: resolver.resolve("lambda", resource.get("Properties", {}))
        for name, resource in resolver.active("lambda").items()
    }


def alias_of(template: dict[str, Any], function: str) -> str:
    """The logical id of the function's alias `live`, and that there is exactly one."""
    aliases = [
        name
        for name, alias in of_type(template["Resources"], "AWS::Lambda::Alias").items()
        if alias["Properties"]["FunctionName"] == {"Ref": function}
    ]
    assert len(aliases) == 1, (function, aliases)
    (name,) = aliases
    assert template["Resources"][name]["Properties"]["Name"] == ALIAS
    return name


def test_snapstart_is_a_parameter_off_by_default(templates):
    parameter = templates["lambda"]["Parameters"]["SnapStart"]
    assert parameter["Type"] == "String"
    # Quoted in the template: bare on/off would be YAML 1.1 booleans.
    assert parameter["AllowedValues"] == ["on", "off"]
    assert parameter["Default"] == "off"


@pytest.mark.parametrize("snapstart", [None, "off"])
def test_without_snapstart_no_function_has_it(templates, snapstart):
    props = resolved(templates, snapstart)
    for function in FUNCTIONS:
        # Absent, which Lambda takes as ApplyOn None (and which regions without
        # SnapStart accept).
        assert "SnapStart" not in props[function], function


def test_with_snapstart_both_functions_snapshot_their_published_versions(templates):
    props = resolved(templates, "on")
    for function in FUNCTIONS:
        assert props[function]["SnapStart"] == {"ApplyOn": "PublishedVersions"}, function


def python_version(runtime: str) -> tuple[int, int]:
    match = re.fullmatch(r"python(\d+)\.(\d+)", runtime)
    assert match, runtime
    return int(match[1]), int(match[2])


def test_every_runtime_the_template_allows_has_snapstart(templates):
    template = templates["lambda"]
    runtime = template["Parameters"]["Runtime"]
    for value in [*runtime["AllowedValues"], runtime["Default"]]:
        assert python_version(value) >= SNAPSTART_PYTHON, value
    props = resolved(templates, "on")
    for function in FUNCTIONS:
        assert template["Resources"][function]["Properties"]["Runtime"] == {"Ref": "Runtime"}
        assert python_version(props[function]["Runtime"]) >= SNAPSTART_PYTHON


def test_nothing_snapstart_refuses_is_configured(templates):
    """SnapStart does not combine with provisioned concurrency, EFS, or ephemeral
    storage over 512 MB."""
    props = resolved(templates, "on")
    template = templates["lambda"]["Resources"]
    for function in FUNCTIONS:
        assert "FileSystemConfigs" not in props[function], function
        storage = props[function].get("EphemeralStorage", {"Size": 512})
        assert storage["Size"] <= 512, function
    for name, resource in template.items():
        if resource["Type"] in {"AWS::Lambda::Version", "AWS::Lambda::Alias"}:
            assert "ProvisionedConcurrencyConfig" not in props[name], name
    assert not of_type(template, "AWS::Lambda::ProvisionedConcurrencyConfig")
    assert not of_type(template, "AWS::EFS::FileSystem")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_publishes_one_version_named_by_the_revision(templates, function):
    template = templates["lambda"]
    versions = {
        name: version
        for name, version in of_type(template["Resources"], "AWS::Lambda::Version").items()
        if version["Properties"]["FunctionName"] == {"Ref": function}
    }
    assert len(versions) == 1, versions
    ((name, version),) = versions.items()
    # A changed Description replaces the version, i.e. publishes a new one: it must
    # change whenever the code or the configuration does, and SnapStart with it.
    description = version["Properties"]["Description"]
    text = description["Fn::Sub"]
    assert "${FunctionRevision}" in text
    assert "${SnapStart}" in text
    # Not retained: the replaced version (and its snapshot, billed while it exists) goes.
    assert version.get("DeletionPolicy", "Delete") == "Delete"
    assert version.get("UpdateReplacePolicy", "Delete") == "Delete"
    # The alias follows the version CloudFormation just published.
    alias = template["Resources"][alias_of(template, function)]["Properties"]
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [name, "Version"]}


def test_the_description_differs_for_another_revision_and_fits(templates):
    descriptions = set()
    for revision in ("0123456789ab-cdef01234567", "0123456789ab-76543210fedc"):
        for snapstart in ("on", "off"):
            resolver = Resolver(
                templates, {"lambda": {"FunctionRevision": revision, "SnapStart": snapstart}}
            )
            text = resolver.resolve(
                "lambda", templates["lambda"]["Resources"]["StockEventsVersion"]["Properties"]
            )["Description"]
            assert revision in text
            descriptions.add(text)
    assert len(descriptions) == 4
    # Lambda's limit for a version's description, with the longest revision allowed.
    longest = Resolver(templates, {"lambda": {"FunctionRevision": "a" * 64}})
    props = longest.resolve(
        "lambda", templates["lambda"]["Resources"]["ReportVersion"]["Properties"]
    )
    assert len(props["Description"]) <= 256


def test_function_revision_is_required_and_takes_what_the_deploy_passes(templates):
    parameter = templates["lambda"]["Parameters"]["FunctionRevision"]
    assert "Default" not in parameter, "a forgotten revision would never publish again"
    pattern = parameter["AllowedPattern"]
    assert re.fullmatch(pattern, "0123456789ab-cdef01234567")
    assert not re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "a" * 65)


def test_the_queue_invokes_the_alias(templates):
    template = templates["lambda"]
    (mapping,) = of_type(template["Resources"], "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["FunctionName"] == {
        "Ref": alias_of(template, "StockEventsFunction")
    }


def test_the_schedule_invokes_the_alias_and_may(templates):
    template = templates["lambda"]
    alias = alias_of(template, "ReportFunction")
    (rule,) = of_type(template["Resources"], "AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    # Ref of an AWS::Lambda::Alias is its ARN, the function's qualified by `live`.
    assert target["Arn"] == {"Ref": alias}
    (permission,) = of_type(template["Resources"], "AWS::Lambda::Permission").values()
    assert permission["Properties"]["FunctionName"] == {"Ref": alias}
    assert permission["Properties"]["Principal"] == "events.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == {"Fn::GetAtt": ["ReportScheduleRule", "Arn"]}


def test_nothing_invokes_latest(templates):
    """No trigger or permission names a function itself (its unqualified ARN: $LATEST)."""
    template = templates["lambda"]["Resources"]
    for kind in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission"):
        for name, resource in of_type(template, kind).items():
            assert resource["Properties"]["FunctionName"] not in [{"Ref": f} for f in FUNCTIONS], (
                name
            )
    for rule in of_type(template, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            assert target["Arn"] not in [{"Fn::GetAtt": [f, "Arn"]} for f in FUNCTIONS]


def test_alarms_count_every_version_by_the_function_name_alone(templates):
    """Lambda's FunctionName dimension alone aggregates every version and alias, so
    the alarms see the alias's invocations; a Resource dimension would narrow them."""
    template = templates["lambda"]["Resources"]
    for alarm in of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props["Namespace"] != "AWS/Lambda":
            continue
        assert [d["Name"] for d in props["Dimensions"]] == ["FunctionName"]
        assert props["Dimensions"][0]["Value"]["Ref"] in FUNCTIONS


def test_the_aliases_and_their_versions_are_outputs(templates):
    outputs = templates["lambda"]["Outputs"]
    for function, prefix in FUNCTIONS.items():
        alias = alias_of(templates["lambda"], function)
        assert outputs[f"{prefix}AliasArn"]["Value"] == {"Ref": alias}
        version = templates["lambda"]["Resources"][alias]["Properties"]["FunctionVersion"]
        assert outputs[f"{prefix}LiveVersion"]["Value"] == version


def test_no_document_or_script_invokes_a_function_without_the_alias():
    """An invoke without --qualifier runs $LATEST: no snapshot, and not what the
    triggers run."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    paths += sorted((REPO / "scripts").glob("*.sh"))
    found = 0
    for path in paths:
        text = path.read_text().replace("\\\n", " ")
        for match in re.finditer(r"aws lambda invoke\b[^\n`]*", text):
            command = match[0]
            if "--function-name" not in command:
                continue  # prose naming the command, not a command
            found += 1
            assert f"--qualifier {ALIAS}" in command, (path.name, command)
    assert found, "the doctor's invoke (docs/infrastructure.md) was not found"
