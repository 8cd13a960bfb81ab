"""The documents say what the code has: docs/infrastructure.md every template, parameter,
variable and target; docs/configuration.md and .env.example every DB_* variable, with
the defaults the code has; and every link between the documents leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataaccess.settings import ENV_VARS, Settings
from tests.infra.conftest import CFN_DIR, REPO, TF_DIR

DOCS = (REPO / "docs" / "infrastructure.md").read_text()
CONFIGURATION = REPO / "docs" / "configuration.md"
ENV_EXAMPLE = REPO / ".env.example"
# Every document a reader is sent to from the README, and the README.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>]+)>")


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


def test_every_db_variable_is_in_the_configuration_table_and_env_example():
    table = CONFIGURATION.read_text()
    example = ENV_EXAMPLE.read_text()
    for name in ENV_VARS:
        assert f"| `{name}` |" in table, name
        assert re.search(rf"^{name}=", example, re.M), name


def env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return dict(pairs)


def test_every_value_in_env_example_is_the_default(tmp_path: Path):
    """Loading .env.example changes nothing but what a reader must fill in anyway."""
    bundle = tmp_path / "rds-global-bundle.pem"
    bundle.write_text("")
    # What has no default: an endpoint, a database and role, a region, the CA bundle.
    required = {
        "DB_HOST": "db.example.internal",
        "DB_NAME": "inventory",
        "DB_USER": "app_iam",
        "DB_REGION": "eu-west-1",
        "DB_SSLROOTCERT": str(bundle),
    }
    given = {name: value for name, value in env_example().items() if value}

    with_example = Settings.from_env({**given, **required})

    assert with_example == Settings.from_env(required)
    assert given["DB_AUTH"] == "iam"
    assert given["DB_SSLMODE"] == "verify-full"
    assert given["DB_NAME"] == "inventory"  # what make run and the aurora stack name it


def _anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of a Markdown file."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_between_the_documents_leads_somewhere(document: Path):
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.M | re.S)
    for match in _LINK.finditer(text):
        target = match[1]
        if target is None or target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (document.parent / file).resolve() if file else document
        assert linked.exists(), f"{document.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{document.name}: {target}"
