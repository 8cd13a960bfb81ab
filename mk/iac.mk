# Infrastructure as code: CloudFormation (cfn/), Terraform IAM (terraform/),
# checkov over both, and the ordered deploy. Offline except tf-init/plan/apply
# and deploy. See docs/infrastructure.md.

CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
CFN_TEMPLATES := $(sort $(wildcard cfn/*.yaml))
TERRAFORM ?= terraform
# Provider mirror for offline `terraform init` (a filesystem mirror laid out as
# registry.terraform.io/hashicorp/aws/...); auto-detected when the machine has one.
TF_PLUGIN_DIR ?= $(firstword $(wildcard /opt/tf-plugins))
TF_PLUGIN_FLAG = $(if $(TF_PLUGIN_DIR),-plugin-dir=$(abspath $(TF_PLUGIN_DIR)))
TF_VARS_FILE ?= $(CURDIR)/build/terraform.tfvars.json
TF_PLAN_FILE ?= $(CURDIR)/build/terraform.tfplan
# Throwaway data dir for the offline checks, so they never touch the real
# (backend-initialised) terraform/.terraform of a deploy.
TF_CHECK_DATA_DIR ?= $(CURDIR)/build/tf-check

# Exported so tests/infra use this checkov, and fail rather than skip without it.
export CHECKOV := $(abspath $(CHECKOV_VENV))/bin/checkov
export TF_PLUGIN_DIR

.PHONY: checkov-venv cfn-validate checkov tf-fmt tf-validate tf-test \
	tf-check iac-check tf-init tf-plan tf-apply deploy deploy-dry-run

# checkov pins its own dependency tree (boto3 ranges among others), so it gets
# its own virtualenv rather than the app's .venv.
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

##@ Infrastructure

checkov-venv: $(CHECKOV_VENV)/.installed ## virtualenv with checkov (.venv-checkov)

# cfn-lint itself is in the dev extra (.venv): tests/infra import its YAML loader.
TEST_PREREQS += checkov-venv

cfn-validate: install ## cfn-lint every CloudFormation template (errors and warnings fail)
	$(VENV)/bin/cfn-lint $(CFN_TEMPLATES)

checkov: checkov-venv ## checkov over cfn/ and terraform/ (skips listed in .checkov.yaml)
	$(CHECKOV) --config-file .checkov.yaml --skip-download --compact --quiet

tf-fmt: ## terraform fmt -check
	$(TERRAFORM) -chdir=terraform fmt -check -recursive -diff

tf-validate: ## terraform init -backend=false and validate, offline
	TF_DATA_DIR=$(TF_CHECK_DATA_DIR) $(TERRAFORM) -chdir=terraform init -backend=false -input=false $(TF_PLUGIN_FLAG)
	TF_DATA_DIR=$(TF_CHECK_DATA_DIR) $(TERRAFORM) -chdir=terraform validate

tf-test: tf-validate ## terraform test with a mocked provider, offline
	TF_DATA_DIR=$(TF_CHECK_DATA_DIR) $(TERRAFORM) -chdir=terraform test

tf-check: tf-fmt tf-validate tf-test ## terraform fmt, validate and test, offline

iac-check: cfn-validate checkov tf-check ## every offline infrastructure check

tf-init: ## terraform init against the state backend: TF_BACKEND_CONFIG=backend.hcl TF_STATE_KEY=<project>/<env>/iam.tfstate
	@test -n "$(TF_BACKEND_CONFIG)" || { echo 'set TF_BACKEND_CONFIG to a backend config file (bucket, region, dynamodb_table; no key)' >&2; exit 2; }
	@test -n "$(TF_STATE_KEY)" || { echo 'set TF_STATE_KEY to <project>/<environment>/iam.tfstate (scripts/deploy.sh does): one state per environment' >&2; exit 2; }
	$(TERRAFORM) -chdir=terraform init -input=false -reconfigure $(TF_PLUGIN_FLAG) -backend-config=$(abspath $(TF_BACKEND_CONFIG)) -backend-config=key=$(TF_STATE_KEY)

tf-plan: ## terraform plan into build/terraform.tfplan, from TF_VARS_FILE (written by deploy.sh)
	@mkdir -p $(dir $(TF_PLAN_FILE))
	$(TERRAFORM) -chdir=terraform plan -input=false -var-file=$(TF_VARS_FILE) -out=$(TF_PLAN_FILE)

tf-apply: ## apply the saved plan (run tf-plan first)
	$(TERRAFORM) -chdir=terraform apply -input=false $(TF_PLAN_FILE)

deploy: ## ordered deploy to AWS (scripts/deploy.sh; configuration in the environment)
	scripts/deploy.sh

deploy-dry-run: ## print every deploy command without calling AWS
	scripts/deploy.sh --dry-run
