"""Fixtures for the infrastructure checks: the decoded CloudFormation templates,
a resolver that turns intrinsics into plain values, and the external tools."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

REPO = Path(__file__).resolve().parents[2]
CFN_DIR = REPO / "cfn"
TF_DIR = REPO / "terraform"
TEMPLATE_NAMES = (
    "network",
    "secrets",
    "aurora",
    "proxy",
    "ecs-cluster",
    "migration",
    "ecs-api",
    "lambda",
    "cognito",
    "dashboard",
)

PSEUDO = {
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "111122223333",
    "AWS::Partition": "aws",
    "AWS::StackName": "stack",
    "AWS::URLSuffix": "amazonaws.com",
}
# GetAtt values the app parses (the port must be a number); the rest become markers.
GETATT_VALUES = {"Endpoint.Port": "5432"}


def load_template(path: Path) -> dict[str, Any]:
    """Decode a template with cfn-lint's loader (short-form intrinsics included)."""
    template, matches = decode(str(path))
    assert not matches, f"{path.name}: {matches}"
    assert template is not None
    return dict(template)


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """Every template under cfn/, by stack name."""
    found = {p.stem: load_template(p) for p in sorted(CFN_DIR.glob("*.yaml"))}
    assert set(found) == set(TEMPLATE_NAMES), "cfn/ and TEMPLATE_NAMES disagree"
    return found


class Resolver:
    """Evaluates intrinsics with parameter defaults (or the values given per stack),
    following ImportValue into the exporting template, so properties can be
    compared as plain values. Conditions are evaluated, as CloudFormation would."""

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, Any]],
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.templates = templates
        self.given = {stack: dict(values) for stack, values in (parameters or {}).items()}
        for stack, values in self.given.items():
            unknown = set(values) - set(templates[stack].get("Parameters", {}))
            assert not unknown, f"{stack} declares no parameter {unknown}"
        self.exports: dict[str, tuple[str, Any]] = {}
        for stack, template in templates.items():
            for output in template.get("Outputs", {}).values():
                if "Export" in output:
                    name = self.resolve(stack, output["Export"]["Name"])
                    assert name not in self.exports, f"export {name} defined twice"
                    self.exports[name] = (stack, output["Value"])

    def parameter(self, stack: str, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        params = self.templates[stack].get("Parameters", {})
        if name in params:
            value = self.given.get(stack, {}).get(name, params[name].get("Default", f"<{name}>"))
            kind = params[name]["Type"]
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                return value if isinstance(value, list) else str(value).split(",")
            return value
        assert name in self.templates[stack]["Resources"], f"{stack}: unknown Ref {name}"
        return f"<{name}>"

    def condition(self, stack: str, name: str) -> bool:
        """A named condition of the stack, evaluated with its parameters."""
        return self.truth(stack, self.templates[stack]["Conditions"][name])

    def truth(self, stack: str, node: Any) -> bool:
        """A condition or rule expression: Fn::Equals/Not/And/Or/Contains, Condition."""
        if isinstance(node, bool):
            return node
        ((key, arg),) = node.items()
        if key == "Condition":
            return self.condition(stack, arg)
        if key == "Fn::Equals":
            left, right = (str(self.resolve(stack, a)) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not self.truth(stack, arg[0])
        if key == "Fn::And":
            return all(self.truth(stack, a) for a in arg)
        if key == "Fn::Or":
            return any(self.truth(stack, a) for a in arg)
        if key == "Fn::Contains":
            values, value = self.resolve(stack, arg[0]), self.resolve(stack, arg[1])
            return str(value) in [str(v) for v in values]
        raise AssertionError(f"{stack}: no evaluator for {key}")

    def active(self, stack: str) -> dict[str, Any]:
        """The stack's resources whose Condition holds (all, for those without one)."""
        return {
            name: resource
            for name, resource in self.templates[stack]["Resources"].items()
            if "Condition" not in resource or self.condition(stack, resource["Condition"])
        }

    def refusals(self, stack: str) -> list[str]:
        """What the template's Rules refuse with these parameters (AssertDescriptions)."""
        refused = []
        for rule in self.templates[stack].get("Rules", {}).values():
            if "RuleCondition" in rule and not self.truth(stack, rule["RuleCondition"]):
                continue
            for assertion in rule["Assertions"]:
                if not self.truth(stack, assertion["Assert"]):
                    refused.append(assertion["AssertDescription"])
        return refused

    def resolve(self, stack: str, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(stack, item) for item in node]
            # AWS::NoValue in a list (also from an Fn::If branch) is no item.
            return [item for item in items if item is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return None if arg == "AWS::NoValue" else self.parameter(stack, arg)
            if key == "Fn::Sub":
                return self._sub(stack, arg)
            if key == "Fn::ImportValue":
                name = self.resolve(stack, arg)
                assert name in self.exports, f"{stack}: ImportValue {name} is exported by no stack"
                source, value = self.exports[name]
                return self.resolve(source, value)
            if key == "Fn::GetAtt":
                resource, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                assert resource in self.templates[stack]["Resources"], f"{stack}: GetAtt {resource}"
                return GETATT_VALUES.get(attr, f"<{resource}.{attr}>")
            if key == "Fn::Join":
                delimiter, items = arg
                return delimiter.join(str(i) for i in self.resolve(stack, items))
            if key == "Fn::Split":
                delimiter, text = arg
                return str(self.resolve(stack, text)).split(delimiter)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(stack, items)[int(index)]
            if key == "Fn::If":
                branch = arg[1] if self.condition(stack, arg[0]) else arg[2]
                return self.resolve(stack, branch)
        resolved = {k: self.resolve(stack, v) for k, v in node.items()}
        # A key whose value is AWS::NoValue is not there at all, as in CloudFormation.
        return {k: v for k, v in resolved.items() if v is not None}

    def _sub(self, stack: str, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(stack, variables[name]))
            if "." in name:
                resource, attr = name.split(".", 1)
                return GETATT_VALUES.get(attr, f"<{resource}.{attr}>")
            return str(self.parameter(stack, name))

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, text)


@pytest.fixture(scope="session")
def resolver(templates: dict[str, dict[str, Any]]) -> Resolver:
    """Resolver over all templates (the exports each stack imports)."""
    return Resolver(templates)


def tool_in_venv(name: str) -> str | None:
    """A console script next to the running interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def checkov_path() -> str | None:
    """checkov from $CHECKOV (set by mk/iac.mk, must exist), else .venv-checkov."""
    configured = os.environ.get("CHECKOV")
    if configured:
        return configured
    local = REPO / ".venv-checkov" / "bin" / "checkov"
    return str(local) if local.exists() else None
