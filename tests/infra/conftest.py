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
    "ecs-cluster",
    "migration",
    "ecs-api",
    "lambda",
    "cognito",
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
    """Evaluates intrinsics with parameter defaults, following ImportValue into
    the exporting template, so properties can be compared as plain values."""

    def __init__(self, templates: Mapping[str, Mapping[str, Any]]) -> None:
        self.templates = templates
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
            return params[name].get("Default", f"<{name}>")
        assert name in self.templates[stack]["Resources"], f"{stack}: unknown Ref {name}"
        return f"<{name}>"

    def resolve(self, stack: str, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(stack, item) for item in node]
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
            if key == "Fn::If":
                # Conditions default to their "true" branch; tests that care look at both.
                return self.resolve(stack, arg[1])
        return {k: self.resolve(stack, v) for k, v in node.items()}

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
