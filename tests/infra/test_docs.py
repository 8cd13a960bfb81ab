"""docs/infrastructure.md documents every template, parameter, variable and target."""

from __future__ import annotations

import re

from dataaccess.settings import ENV_VARS
from tests.infra.conftest import CFN_DIR, REPO, TF_DIR

DOCS = (REPO / "docs" / "infrastructure.md").read_text()


def test_every_template_and_parameter_is_documented(templates):
    for stack, template in templates.items():
        assert f"`cfn/{stack}.yaml`" in DOCS, stack
        for parameter in template.get("Parameters", {}):
            assert f"`{parameter}`" in DOCS, f"{stack}: {parameter}"
    assert len(templates) == len(list(CFN_DIR.glob("*.yaml")))


def test_every_terraform_variable_and_output_is_documented():
    text = "\n".join(p.read_text() for p in TF_DIR.glob("*.tf"))
    names = re.findall(r'^(?:variable|output) "([a-z_]+)"', text, re.M)
    assert names
    for name in names:
        assert f"`{name}`" in DOCS, name


def test_every_make_target_is_documented():
    makefile = (REPO / "mk" / "iac.mk").read_text()
    targets = re.findall(r"^([a-z][a-z-]+):", makefile, re.M)
    assert {"deploy", "tf-init", "tf-plan", "tf-apply", "cfn-validate"} <= set(targets)
    for target in targets:
        assert f"`{target}`" in DOCS, target


def test_every_deploy_setting_is_documented():
    script = (REPO / "scripts" / "deploy.sh").read_text()
    settings = set(re.findall(r'"\$\{([A-Z_]+):-', script)) | set(
        re.findall(r"^for var in (.+?); do", script.replace("\\\n", " "), re.M | re.S)[0].split()
    )
    assert "AWS_REGION" in settings
    for name in settings:
        assert name in DOCS, name


def test_every_db_variable_is_in_the_readme_table_and_env_example():
    readme = (REPO / "README.md").read_text()
    example = (REPO / ".env.example").read_text()
    for name in ENV_VARS:
        assert f"| `{name}` |" in readme, name
        assert re.search(rf"^{name}=", example, re.M), name
