#!/usr/bin/env bash
# Deploy dataaccess in dependency order; safe to re-run (every step converges):
#
#   1. secrets (the KMS key), network, aurora, ecs-cluster stacks (CloudFormation)
#   2. IAM                                             (Terraform; needs the cluster id);
#      with DB_PROXY=on the proxy stack (needs the proxy's role from Terraform),
#      then Terraform again for the grants through the proxy (needs its id)
#   3. API image build and push                        (skipped if the tag exists)
#   4. migration stack, then `alembic upgrade head` as a one-off Fargate task;
#      the deploy stops unless its container exits 0
#   5. ecs-api stack (service update to the migrated image)
#   6. lambda zip upload and lambda stack (function update, and a new version for
#      the alias `live` that every trigger invokes)
#   7. dashboard stack
#
# The API load balancer is internal unless --public (or PUBLIC_API=true) asks
# for an internet-facing one. DB_PROXY=on puts an RDS Proxy in front of the
# cluster for the Lambda functions; DB_PROXY=off after on moves them back to the
# cluster, then deletes the proxy stack and its grants. OPERATOR_ACCESS=true opens
# the operators' path to the database (ECS Exec port forwarding, their own login).
#
# --dry-run prints every command instead of running it and calls no AWS API;
# values that would come from AWS are shown as <placeholders>.
#
# Configuration (environment): see docs/infrastructure.md, "Deploying".
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/deploy.sh [--dry-run] [--public]

  --dry-run   print every command, call nothing
  --public    internet-facing API load balancer (same as PUBLIC_API=true);
              without it the load balancer is internal

Required in the environment (real runs): AWS_REGION, VPC_ID, PRIVATE_SUBNET_IDS,
PUBLIC_SUBNET_IDS (comma-separated), CERTIFICATE_ARN, ARTIFACT_BUCKET,
TF_BACKEND_CONFIG, PYTHON_IMAGE_DIGEST (sha256:... of python:3.12-slim),
RDS_CA_BUNDLE_SHA256 (hex SHA-256 of the RDS global CA bundle), and the
token issuer the API trusts: AUTH_ISSUER, AUTH_AUDIENCE, AUTH_JWKS_URL (the
API accepts no anonymous calls). Optional:
PROJECT (dataaccess), ENVIRONMENT (dev), IMAGE_TAG (the commit), PUBLIC_API
(false), ALB_INGRESS_CIDR (the VPC CIDR; 0.0.0.0/0 when public), VPC_CIDR
(looked up), ARTIFACT_BUCKET_OWNER (the deploying account), AWS_API_EGRESS_CIDR,
ACCESS_LOG_BUCKET, ALARM_TOPIC_ARN (required with ENVIRONMENT=prod),
MASTER_USERNAME (dbadmin), DB_IAM_USER (app_iam), DATABASE_NAME (inventory),
MIGRATION_TIMEOUT_SECONDS (1800).

Database and network options (docs/infrastructure.md says when to choose each):
  DB_PROXY=on|off (off)        RDS Proxy for the Lambda functions (IAM end to end)
  MIN_CAPACITY (0.5)           Serverless v2 minimum ACUs; 0 = auto-pause (not with
                               DB_PROXY=on); MAX_CAPACITY (1) the maximum
  SECONDS_UNTIL_AUTO_PAUSE (300)  idle seconds before an instance pauses (300-86400)
  PRIVATE_EGRESS=nat|endpoints (nat)  endpoints: interface endpoints and the S3
                               gateway endpoint instead of NAT; needs
                               PRIVATE_ROUTE_TABLE_IDS (comma-separated)
  S3_PREFIX_LIST_ID            the region's S3 prefix list (looked up)
  ENABLE_FLOW_LOGS=true|false (true)  VPC flow logs, encrypted with the project key

Monitoring and protection:
  LAMBDA_TRACING=Active|PassThrough (Active)  X-Ray tracing of the functions
  API_TRACING=true|false (false)  an X-Ray daemon sidecar beside the API; needs
                               XRAY_DAEMON_IMAGE (the daemon image, pinned @sha256:...)
  WAF_RATE_LIMIT_PER_5MIN (2000)  requests per client IP per 5 minutes the WAF allows

Functions and operators:
  STOCK_EVENTS_MAX_CONCURRENCY (5)  stock-events instances (and so database
                               connections) at most, 2-1000; needs no quota
  LAMBDA_RESERVED_CONCURRENCY=true|false (false)  also reserve that concurrency
                               (needs an account quota above 100 plus it)
  LAMBDA_SNAPSTART=on|off (off)  SnapStart on the functions' published versions
                               (billed per version cached and per restore)
  OPERATOR_ACCESS=true|false (false)  ECS Exec on the API tasks, the operator IAM
                               group and its port forwarding to the database
USAGE
}

DRY_RUN=0
PUBLIC_API="${PUBLIC_API:-false}"
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --public) PUBLIC_API=true ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Trace lines go to the original stdout even from inside $(...).
exec 3>&1

say() { printf '==> %s\n' "$*" >&3; }
# What happened, or under --dry-run what would have: a dry run reports no outcome.
outcome() { if ((DRY_RUN)); then say "$1"; else say "$2"; fi; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

# Print a command as a shell would read it; <placeholders> stay readable.
trace() {
  local out='+' arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+\<\>-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "$out" >&3
}

# Run a command (or only print it in a dry run).
run() {
  trace "$@"
  if ((DRY_RUN)); then return 0; fi
  "$@"
}

# Run a command for its output; a dry run prints it and yields the placeholder.
capture() {
  local placeholder="$1"
  shift
  trace "$@"
  if ((DRY_RUN)); then
    printf '%s' "$placeholder"
    return 0
  fi
  "$@"
}

# Configuration ---------------------------------------------------------------

require() {
  local name="$1"
  if [[ -z "${!name:-}" ]]; then
    if ((DRY_RUN)); then
      printf -v "$name" '<%s>' "$name"
    else
      die "$name is not set (see scripts/deploy.sh --help)"
    fi
  fi
}

for var in AWS_REGION VPC_ID PRIVATE_SUBNET_IDS PUBLIC_SUBNET_IDS CERTIFICATE_ARN \
  ARTIFACT_BUCKET TF_BACKEND_CONFIG PYTHON_IMAGE_DIGEST RDS_CA_BUNDLE_SHA256 \
  AUTH_ISSUER AUTH_AUDIENCE AUTH_JWKS_URL; do
  require "$var"
done

# Supply-chain pins: the base image by digest and the CA bundle by checksum
# (api/Dockerfile has no defaults for them; docs/infrastructure.md, "Supply
# chain", says where they come from). The zip's bundle is checked against the
# same checksum by scripts/package_lambda.py.
if ((!DRY_RUN)); then
  [[ "$PYTHON_IMAGE_DIGEST" =~ ^sha256:[0-9a-f]{64}$ ]] ||
    die "PYTHON_IMAGE_DIGEST must be sha256:<64 hex digits> (the digest of python:3.12-slim)"
  [[ "$RDS_CA_BUNDLE_SHA256" =~ ^[0-9a-f]{64}$ ]] ||
    die "RDS_CA_BUNDLE_SHA256 must be 64 lower-case hex digits (sha256sum of the RDS global bundle)"
fi
export RDS_CA_BUNDLE_SHA256

case "$PUBLIC_API" in
  true) LOAD_BALANCER_SCHEME=internet-facing ;;
  false | "") PUBLIC_API=false LOAD_BALANCER_SCHEME=internal ;;
  *) die "PUBLIC_API must be true or false, not '$PUBLIC_API'" ;;
esac

PROJECT="${PROJECT:-dataaccess}"
ENVIRONMENT="${ENVIRONMENT:-dev}"
PREFIX="$PROJECT-$ENVIRONMENT"
# Default: 0.0.0.0/0 through NAT, the VPC CIDR with endpoints (set in step 1).
AWS_API_EGRESS_CIDR="${AWS_API_EGRESS_CIDR:-}"
ALB_INGRESS_CIDR="${ALB_INGRESS_CIDR:-}"
VPC_CIDR="${VPC_CIDR:-}"
ARTIFACT_BUCKET_OWNER="${ARTIFACT_BUCKET_OWNER:-}"
ACCESS_LOG_BUCKET="${ACCESS_LOG_BUCKET:-}"
ALARM_TOPIC_ARN="${ALARM_TOPIC_ARN:-}"
MASTER_USERNAME="${MASTER_USERNAME:-dbadmin}"
DB_IAM_USER="${DB_IAM_USER:-app_iam}"
DATABASE_NAME="${DATABASE_NAME:-inventory}"
MIGRATION_TIMEOUT_SECONDS="${MIGRATION_TIMEOUT_SECONDS:-1800}"
DB_PROXY="${DB_PROXY:-off}"
MIN_CAPACITY="${MIN_CAPACITY:-0.5}"
MAX_CAPACITY="${MAX_CAPACITY:-1}"
SECONDS_UNTIL_AUTO_PAUSE="${SECONDS_UNTIL_AUTO_PAUSE:-300}"
PRIVATE_EGRESS="${PRIVATE_EGRESS:-nat}"
PRIVATE_ROUTE_TABLE_IDS="${PRIVATE_ROUTE_TABLE_IDS:-}"
S3_PREFIX_LIST_ID="${S3_PREFIX_LIST_ID:-}"
ENABLE_FLOW_LOGS="${ENABLE_FLOW_LOGS:-true}"
LAMBDA_TRACING="${LAMBDA_TRACING:-Active}"
API_TRACING="${API_TRACING:-false}"
XRAY_DAEMON_IMAGE="${XRAY_DAEMON_IMAGE:-}"
WAF_RATE_LIMIT_PER_5MIN="${WAF_RATE_LIMIT_PER_5MIN:-2000}"
STOCK_EVENTS_MAX_CONCURRENCY="${STOCK_EVENTS_MAX_CONCURRENCY:-5}"
LAMBDA_RESERVED_CONCURRENCY="${LAMBDA_RESERVED_CONCURRENCY:-false}"
LAMBDA_SNAPSTART="${LAMBDA_SNAPSTART:-off}"
OPERATOR_ACCESS="${OPERATOR_ACCESS:-false}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
TF_VARS_FILE="$BUILD_DIR/terraform.tfvars.json"

# Image tags are immutable and name a commit, so a dirty tree cannot be deployed
# under that commit's name.
if [[ -z "${IMAGE_TAG:-}" ]]; then
  IMAGE_TAG="$(git rev-parse --short=12 HEAD)"
  if ((!DRY_RUN)) && [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    die "uncommitted changes: commit them or set IMAGE_TAG"
  fi
fi

if [[ "$ALB_INGRESS_CIDR" == 0.0.0.0/0 && "$PUBLIC_API" != true ]]; then
  die "ALB_INGRESS_CIDR=0.0.0.0/0 needs an internet-facing API: pass --public (PUBLIC_API=true)"
fi

# Database and network options. The templates refuse the same combinations
# (their Rules); checking here stops before anything is deployed.
[[ "$DB_PROXY" == on || "$DB_PROXY" == off ]] || die "DB_PROXY must be on or off, not '$DB_PROXY'"
[[ "$MIN_CAPACITY" =~ ^[0-9]+(\.[05])?$ ]] || die "MIN_CAPACITY must be ACUs in steps of 0.5, not '$MIN_CAPACITY'"
if ! [[ "$SECONDS_UNTIL_AUTO_PAUSE" =~ ^[0-9]+$ ]] || ((SECONDS_UNTIL_AUTO_PAUSE < 300 || SECONDS_UNTIL_AUTO_PAUSE > 86400)); then
  die "SECONDS_UNTIL_AUTO_PAUSE must be 300 to 86400 seconds, not '$SECONDS_UNTIL_AUTO_PAUSE'"
fi
# Checked before anything starts: a bad value would only fail the arithmetic after
# the migration task had been launched, leaving it unwatched.
[[ "$MIGRATION_TIMEOUT_SECONDS" =~ ^(0|[1-9][0-9]*)$ ]] ||
  die "MIGRATION_TIMEOUT_SECONDS must be a whole number of seconds, not '$MIGRATION_TIMEOUT_SECONDS'"
# The load balancer's /readyz pings the database every 15 s: an auto-pause cluster
# would never pause, so it checks /healthz (no database) instead.
HEALTH_CHECK_PATH=/readyz
[[ "$MIN_CAPACITY" =~ ^0(\.0)?$ ]] && HEALTH_CHECK_PATH=/healthz
if [[ "$MIN_CAPACITY" =~ ^0(\.0)?$ && "$DB_PROXY" == on ]]; then
  die "MIN_CAPACITY=0 (auto-pause) cannot be combined with DB_PROXY=on: the proxy's connections keep the cluster awake"
fi
case "$PRIVATE_EGRESS" in
  nat) ;;
  endpoints)
    if [[ -z "$PRIVATE_ROUTE_TABLE_IDS" ]]; then
      ((DRY_RUN)) ||
        die "PRIVATE_EGRESS=endpoints needs PRIVATE_ROUTE_TABLE_IDS (the private subnets' route tables, for the S3 gateway endpoint)"
      PRIVATE_ROUTE_TABLE_IDS='<PRIVATE_ROUTE_TABLE_IDS>'
    fi
    ;;
  *) die "PRIVATE_EGRESS must be nat or endpoints, not '$PRIVATE_EGRESS'" ;;
esac
[[ "$ENABLE_FLOW_LOGS" == true || "$ENABLE_FLOW_LOGS" == false ]] ||
  die "ENABLE_FLOW_LOGS must be true or false, not '$ENABLE_FLOW_LOGS'"
[[ "$LAMBDA_TRACING" == Active || "$LAMBDA_TRACING" == PassThrough ]] ||
  die "LAMBDA_TRACING must be Active or PassThrough, not '$LAMBDA_TRACING'"
[[ "$API_TRACING" == true || "$API_TRACING" == false ]] ||
  die "API_TRACING must be true or false, not '$API_TRACING'"
if [[ "$API_TRACING" == true && ! "$XRAY_DAEMON_IMAGE" =~ @sha256:[0-9a-f]{64}$ ]]; then
  die "API_TRACING=true needs XRAY_DAEMON_IMAGE pinned by digest (<image>@sha256:<64 hex digits>)"
fi
[[ "$WAF_RATE_LIMIT_PER_5MIN" =~ ^[0-9]+$ ]] && ((WAF_RATE_LIMIT_PER_5MIN >= 10)) ||
  die "WAF_RATE_LIMIT_PER_5MIN must be a whole number of at least 10, not '$WAF_RATE_LIMIT_PER_5MIN'"
# The lambda stack's Rules refuse the same; an alarm with no action tells no one.
if [[ "$ENVIRONMENT" == prod && -z "$ALARM_TOPIC_ARN" ]]; then
  die "ENVIRONMENT=prod needs ALARM_TOPIC_ARN (an SNS topic someone is subscribed to): the alarms would notify no one"
fi
[[ "$STOCK_EVENTS_MAX_CONCURRENCY" =~ ^[0-9]+$ ]] &&
  ((STOCK_EVENTS_MAX_CONCURRENCY >= 2 && STOCK_EVENTS_MAX_CONCURRENCY <= 1000)) ||
  die "STOCK_EVENTS_MAX_CONCURRENCY must be 2 to 1000 (the SQS event source's limits), not '$STOCK_EVENTS_MAX_CONCURRENCY'"
[[ "$LAMBDA_RESERVED_CONCURRENCY" == true || "$LAMBDA_RESERVED_CONCURRENCY" == false ]] ||
  die "LAMBDA_RESERVED_CONCURRENCY must be true or false, not '$LAMBDA_RESERVED_CONCURRENCY'"
[[ "$LAMBDA_SNAPSTART" == on || "$LAMBDA_SNAPSTART" == off ]] ||
  die "LAMBDA_SNAPSTART must be on or off, not '$LAMBDA_SNAPSTART'"
[[ "$OPERATOR_ACCESS" == true || "$OPERATOR_ACCESS" == false ]] ||
  die "OPERATOR_ACCESS must be true or false, not '$OPERATOR_ACCESS'"

if ((!DRY_RUN)); then
  for tool in aws docker terraform make git sha256sum base64; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
  done
fi

AWS=(aws --region "$AWS_REGION")

# Helpers ---------------------------------------------------------------------

# Create or update a stack; "no changes" is success, so re-runs converge.
deploy_stack() {
  local name="$1"
  shift
  say "stack $PREFIX-$name"
  run "${AWS[@]}" cloudformation deploy \
    --stack-name "$PREFIX-$name" \
    --template-file "cfn/$name.yaml" \
    --capabilities CAPABILITY_IAM \
    --no-fail-on-empty-changeset \
    --tags "Project=$PROJECT" "Environment=$ENVIRONMENT" \
    --parameter-overrides "ProjectName=$PROJECT" "EnvironmentName=$ENVIRONMENT" "$@"
}

stack_output() {
  local name="$1" key="$2"
  capture "<$name.$key>" "${AWS[@]}" cloudformation describe-stacks \
    --stack-name "$PREFIX-$name" \
    --query "Stacks[0].Outputs[?OutputKey=='$key'].OutputValue | [0]" \
    --output text
}

tf_output() {
  capture "<terraform.$1>" terraform -chdir=terraform output -raw "$1"
}

# An output of a stack that may not exist: empty when it does not. A dry run
# shows the look-up and assumes a first deploy (no such stack). Any other error
# (throttling, expired credentials) stops the deploy: read as "no such stack", it
# would make an existing cluster look new, and its identifier change replace it.
existing_stack_output() {
  local name="$1" key="$2" value err
  err="$(mktemp)"
  if ! value="$(capture '' "${AWS[@]}" cloudformation describe-stacks \
    --stack-name "$PREFIX-$name" \
    --query "Stacks[0].Outputs[?OutputKey=='$key'].OutputValue | [0]" \
    --output text 2>"$err")"; then
    if ! grep -q "does not exist" "$err"; then
      cat "$err" >&2
      rm -f "$err"
      die "could not read stack $PREFIX-$name (above); not treating it as absent"
    fi
    value=""
  fi
  rm -f "$err"
  [[ "$value" == None ]] && value=""
  printf '%s' "$value"
}

# The base64 of the SHA-256 given in hex: the form S3 checksums take.
hex_to_base64() {
  local hex="$1" i
  for ((i = 0; i < ${#hex}; i += 2)); do
    printf "\\x${hex:i:2}"
  done | base64
}

# 1. Foundations --------------------------------------------------------------

if [[ -z "$VPC_CIDR" ]]; then
  VPC_CIDR="$(capture '<vpc.CidrBlock>' "${AWS[@]}" ec2 describe-vpcs --vpc-ids "$VPC_ID" \
    --query 'Vpcs[0].CidrBlock' --output text)"
fi
if [[ -z "$ALB_INGRESS_CIDR" ]]; then
  if [[ "$PUBLIC_API" == true ]]; then ALB_INGRESS_CIDR=0.0.0.0/0; else ALB_INGRESS_CIDR="$VPC_CIDR"; fi
fi
say "API load balancer: $LOAD_BALANCER_SCHEME, reachable from $ALB_INGRESS_CIDR"
if [[ -z "$AWS_API_EGRESS_CIDR" ]]; then
  if [[ "$PRIVATE_EGRESS" == endpoints ]]; then AWS_API_EGRESS_CIDR="$VPC_CIDR"; else AWS_API_EGRESS_CIDR=0.0.0.0/0; fi
fi
# CloudFormation cannot look up the S3 prefix list; the API group needs it to
# pull image layers whenever its egress is narrower than 0.0.0.0/0.
if [[ -z "$S3_PREFIX_LIST_ID" ]]; then
  S3_PREFIX_LIST_ID="$(capture '<s3.PrefixListId>' "${AWS[@]}" ec2 describe-managed-prefix-lists \
    --filters "Name=prefix-list-name,Values=com.amazonaws.$AWS_REGION.s3" \
    --query 'PrefixLists[0].PrefixListId' --output text)"
fi
# A proxy left from DB_PROXY=on stays (and so do its role and grants) until the
# functions have moved off it, at the end of this deploy.
EXISTING_PROXY_ID="$(existing_stack_output proxy ProxyResourceId)"
if [[ "$DB_PROXY" == on || -n "$EXISTING_PROXY_ID" ]]; then PROXY_ENABLED=true; else PROXY_ENABLED=false; fi
if [[ "$MIN_CAPACITY" =~ ^0(\.0)?$ && "$PROXY_ENABLED" == true ]]; then
  die "MIN_CAPACITY=0 (auto-pause) needs the proxy gone: deploy with DB_PROXY=off first (it removes proxy $EXISTING_PROXY_ID)"
fi
say "database: minimum $MIN_CAPACITY ACUs, RDS Proxy $DB_PROXY; private egress through $PRIVATE_EGRESS"

# A cluster created before RDS managed its master password (and before its fixed
# identifier) keeps both properties' values: a change to either replaces the
# cluster, which CloudFormation then refuses. Its generated identifier and the
# retained secret its user name was read from go back to the aurora stack on
# every deploy (docs/infrastructure.md, "Upgrading an existing deploy").
EXISTING_CLUSTER_ID="$(existing_stack_output aurora ClusterIdentifier)"
OLD_MASTER_SECRET_EXPORT="$(existing_stack_output secrets MasterSecretArn)"
LEGACY_CLUSTER_IDENTIFIER="" LEGACY_MASTER_SECRET_ARN=""
if [[ -n "$EXISTING_CLUSTER_ID" && "$EXISTING_CLUSTER_ID" != "$PREFIX" ]]; then
  LEGACY_CLUSTER_IDENTIFIER="$EXISTING_CLUSTER_ID"
  LEGACY_MASTER_SECRET_ARN="$(existing_stack_output aurora LegacyMasterSecretArn)"
  [[ -n "$LEGACY_MASTER_SECRET_ARN" ]] || LEGACY_MASTER_SECRET_ARN="$OLD_MASTER_SECRET_EXPORT"
  [[ -n "$LEGACY_MASTER_SECRET_ARN" ]] ||
    die "cluster $EXISTING_CLUSTER_ID predates the RDS-managed master password, and neither the aurora stack (LegacyMasterSecretArn) nor the secrets stack (MasterSecretArn) names the secret its MasterUsername was read from"
  say "cluster $EXISTING_CLUSTER_ID: keeps its identifier and master user name (from $LEGACY_MASTER_SECRET_ARN)"
fi
# The old secrets stack exports the old secret to the aurora and migration
# stacks, and an export in use cannot be removed: that stack follows them, then.
DEFER_SECRETS_STACK=false
[[ -n "$LEGACY_CLUSTER_IDENTIFIER" && -n "$OLD_MASTER_SECRET_EXPORT" ]] && DEFER_SECRETS_STACK=true

# The network stack's flow log group is encrypted with the secrets stack's key.
if [[ "$DEFER_SECRETS_STACK" == true ]]; then
  say "stack $PREFIX-secrets: after the aurora and migration stacks stop importing its MasterSecretArn (step 4)"
else
  deploy_stack secrets
fi
deploy_stack network \
  "VpcId=$VPC_ID" \
  "VpcCidr=$VPC_CIDR" \
  "PrivateSubnetIds=$PRIVATE_SUBNET_IDS" \
  "PublicSubnetIds=$PUBLIC_SUBNET_IDS" \
  "AlbIngressCidr=$ALB_INGRESS_CIDR" \
  "AwsApiEgressCidr=$AWS_API_EGRESS_CIDR" \
  "PrivateEgress=$PRIVATE_EGRESS" \
  "PrivateRouteTableIds=$PRIVATE_ROUTE_TABLE_IDS" \
  "S3PrefixListId=$S3_PREFIX_LIST_ID" \
  "EnableFlowLogs=$ENABLE_FLOW_LOGS" \
  "OperatorAccess=$OPERATOR_ACCESS"
deploy_stack aurora "DatabaseName=$DATABASE_NAME" "IamDbUser=$DB_IAM_USER" \
  "MasterUsername=$MASTER_USERNAME" \
  "LegacyMasterSecretArn=$LEGACY_MASTER_SECRET_ARN" \
  "LegacyClusterIdentifier=$LEGACY_CLUSTER_IDENTIFIER" \
  "MinCapacity=$MIN_CAPACITY" "MaxCapacity=$MAX_CAPACITY" \
  "SecondsUntilAutoPause=$SECONDS_UNTIL_AUTO_PAUSE" "ProxyEnabled=$PROXY_ENABLED"
deploy_stack ecs-cluster

# 2. IAM ----------------------------------------------------------------------

say "terraform (IAM)"
CLUSTER_RESOURCE_ID="$(stack_output aurora ClusterResourceId)"
# The RDS-managed secret: the aurora stack, which runs before Terraform, has it.
MASTER_SECRET_ARN="$(stack_output aurora MasterUserSecretArn)"
KMS_KEY_ARN="$(stack_output secrets KmsKeyArn)"
REPOSITORY_ARN="$(stack_output ecs-cluster RepositoryArn)"
REPOSITORY_URI="$(stack_output ecs-cluster RepositoryUri)"
ECS_CLUSTER="$(stack_output ecs-cluster ClusterName)"

# tfvars from the stack outputs; the arguments are the proxy's: whether its
# role exists, and its resource id (or empty).
write_tfvars() {
  local enable_proxy="$1" proxy_resource_id="$2"
  TF_VARS_JSON="$(printf '{"project": "%s", "environment": "%s", "aws_region": "%s", "cluster_resource_id": "%s", "db_iam_user": "%s", "master_username": "%s", "master_secret_arn": "%s", "kms_key_arn": "%s", "ecr_repository_arn": "%s", "enable_operator_access": %s, "enable_proxy": %s, "proxy_resource_id": "%s"}' \
    "$PROJECT" "$ENVIRONMENT" "$AWS_REGION" "$CLUSTER_RESOURCE_ID" "$DB_IAM_USER" \
    "$MASTER_USERNAME" "$MASTER_SECRET_ARN" "$KMS_KEY_ARN" "$REPOSITORY_ARN" \
    "$OPERATOR_ACCESS" "$enable_proxy" "$proxy_resource_id")"
  trace write "$TF_VARS_FILE" "$TF_VARS_JSON"
  if ((!DRY_RUN)); then
    mkdir -p "$BUILD_DIR"
    printf '%s\n' "$TF_VARS_JSON" >"$TF_VARS_FILE"
  fi
}

# Another plan and apply with the proxy's variables changed (tf-init is done).
terraform_again() {
  write_tfvars "$1" "$2"
  run make tf-plan "TF_VARS_FILE=$TF_VARS_FILE"
  run make tf-apply
}

write_tfvars "$PROXY_ENABLED" "$EXISTING_PROXY_ID"
# One state per environment: the key is derived here, never taken from the backend
# file, so ENVIRONMENT=prod cannot plan against dev's state and replace its roles.
TF_STATE_KEY="$PROJECT/$ENVIRONMENT/iam.tfstate"
if ((!DRY_RUN)); then
  [[ -f "$TF_BACKEND_CONFIG" ]] || die "TF_BACKEND_CONFIG names no file: $TF_BACKEND_CONFIG"
fi
if ((!DRY_RUN)) && grep -Eq '^[[:space:]]*key[[:space:]]*=' "$TF_BACKEND_CONFIG"; then
  die "$TF_BACKEND_CONFIG sets key: remove it; the state key is derived from the environment ($TF_STATE_KEY)"
fi
run make tf-init "TF_BACKEND_CONFIG=$TF_BACKEND_CONFIG" "TF_STATE_KEY=$TF_STATE_KEY"
run make tf-plan "TF_VARS_FILE=$TF_VARS_FILE"
run make tf-apply

# The proxy needs its role (above); the functions' grants through it need its
# resource id, known once the stack exists: a second pass on its first deploy.
PROXY_ENDPOINT="" PROXY_READER_ENDPOINT=""
if [[ "$DB_PROXY" == on ]]; then
  deploy_stack proxy "ProxyRoleArn=$(tf_output rds_proxy_role_arn)"
  PROXY_RESOURCE_ID="$(stack_output proxy ProxyResourceId)"
  if [[ "$PROXY_RESOURCE_ID" != "$EXISTING_PROXY_ID" ]]; then
    say "terraform (IAM): rds-db:connect through proxy $PROXY_RESOURCE_ID"
    terraform_again true "$PROXY_RESOURCE_ID"
  fi
  PROXY_ENDPOINT="$(stack_output proxy ProxyEndpoint)"
  PROXY_READER_ENDPOINT="$(stack_output proxy ProxyReaderEndpoint)"
fi

API_TASK_ROLE_ARN="$(tf_output api_task_role_arn)"
API_EXECUTION_ROLE_ARN="$(tf_output api_execution_role_arn)"
MIGRATION_EXECUTION_ROLE_ARN="$(tf_output migration_execution_role_arn)"
STOCK_EVENTS_ROLE_ARN="$(tf_output stock_events_lambda_role_arn)"
REPORT_ROLE_ARN="$(tf_output report_lambda_role_arn)"

# 3. Image --------------------------------------------------------------------

IMAGE_URI="$REPOSITORY_URI:$IMAGE_TAG"
# What the task definitions declare (RuntimePlatform X86_64 in cfn/ecs-api.yaml and
# cfn/migration.yaml), whatever the machine that builds it.
IMAGE_PLATFORM=linux/amd64
say "image $IMAGE_URI"
REGISTRY="${REPOSITORY_URI%%/*}"
# Logged in whether or not the image is built here: the architecture check below
# reads the pushed manifest from the (private) registry too.
trace "${AWS[@]}" ecr get-login-password '|' docker login --username AWS --password-stdin "$REGISTRY"
if ((!DRY_RUN)); then
  "${AWS[@]}" ecr get-login-password | docker login --username AWS --password-stdin "$REGISTRY"
fi
if ((!DRY_RUN)) && "${AWS[@]}" ecr describe-images --repository-name "${REPOSITORY_URI#*/}" \
  --image-ids "imageTag=$IMAGE_TAG" >/dev/null 2>&1; then
  say "image tag $IMAGE_TAG already pushed; not rebuilding"
else
  trace "${AWS[@]}" ecr describe-images --repository-name "${REPOSITORY_URI#*/}" --image-ids "imageTag=$IMAGE_TAG"
  run docker build --file api/Dockerfile --platform "$IMAGE_PLATFORM" \
    --build-arg "PYTHON_IMAGE_DIGEST=$PYTHON_IMAGE_DIGEST" \
    --build-arg "RDS_CA_BUNDLE_SHA256=$RDS_CA_BUNDLE_SHA256" \
    --tag "$IMAGE_URI" .
  built="$(capture "$IMAGE_PLATFORM" docker image inspect --format '{{.Os}}/{{.Architecture}}' "$IMAGE_URI")"
  [[ "$built" == "$IMAGE_PLATFORM" ]] || die "docker built $built, not $IMAGE_PLATFORM; not pushing"
  run docker push "$IMAGE_URI"
fi
# The tag may have been pushed by an earlier run (from another machine): the tasks
# would die with "exec format error" on an image of another architecture.
if ((!DRY_RUN)); then
  manifest="$(docker manifest inspect --verbose "$IMAGE_URI")" ||
    die "could not read the manifest of $IMAGE_URI (above)"
  grep -Eq "\"architecture\": *\"${IMAGE_PLATFORM#*/}\"" <<<"$manifest" ||
    die "image $IMAGE_URI is not $IMAGE_PLATFORM; the tasks require it: deploy under a new IMAGE_TAG"
fi

# 4. Migration ----------------------------------------------------------------

deploy_stack migration "ImageUri=$IMAGE_URI" "MigrationExecutionRoleArn=$MIGRATION_EXECUTION_ROLE_ARN"
# Nothing imports the old secret's export any more: the secrets stack drops it
# and the old secret (retained, not deleted: docs/infrastructure.md).
if [[ "$DEFER_SECRETS_STACK" == true ]]; then
  deploy_stack secrets
fi
MIGRATION_TASK_DEFINITION="$(stack_output migration TaskDefinitionArn)"
PRIVATE_SUBNETS="$(stack_output network PrivateSubnetIds)"
API_SECURITY_GROUP="$(stack_output network ApiSecurityGroupId)"

say "migration: alembic upgrade head"
# RunTask's startedBy: at most 36 of [A-Za-z0-9_/-]; a tag like v1.2.3 or a full SHA is not.
STARTED_BY="deploy-${IMAGE_TAG//[^A-Za-z0-9_\/-]/-}"
STARTED_BY="${STARTED_BY:0:36}"
MIGRATION_TASK="$(capture '<migration-task-arn>' "${AWS[@]}" ecs run-task \
  --cluster "$ECS_CLUSTER" \
  --task-definition "$MIGRATION_TASK_DEFINITION" \
  --launch-type FARGATE \
  --started-by "$STARTED_BY" \
  --network-configuration "awsvpcConfiguration={subnets=[$PRIVATE_SUBNETS],securityGroups=[$API_SECURITY_GROUP],assignPublicIp=DISABLED}" \
  --query 'tasks[0].taskArn' --output text)"
[[ -n "$MIGRATION_TASK" && "$MIGRATION_TASK" != "None" ]] || die "the migration task did not start"

# The CLI waiter gives up after 10 minutes; long migrations get several rounds.
deadline=$((SECONDS + MIGRATION_TIMEOUT_SECONDS))
until run "${AWS[@]}" ecs wait tasks-stopped --cluster "$ECS_CLUSTER" --tasks "$MIGRATION_TASK"; do
  if ((SECONDS >= deadline)); then
    # Stopped, so a re-run never starts a second `alembic upgrade` beside it (the
    # migration lock in alembic/env.py would make that one wait, not run twice).
    run "${AWS[@]}" ecs stop-task --cluster "$ECS_CLUSTER" --task "$MIGRATION_TASK" \
      --reason "deploy gave up after ${MIGRATION_TIMEOUT_SECONDS}s" >/dev/null
    die "migration task $MIGRATION_TASK still running after ${MIGRATION_TIMEOUT_SECONDS}s: stopped it; its migration rolled back. The service was not updated."
  fi
  # The waiter gave up (10 minutes) or failed at once (a denied call): not back to back.
  ((DRY_RUN)) || sleep 10
done
MIGRATION_EXIT="$(capture 0 "${AWS[@]}" ecs describe-tasks \
  --cluster "$ECS_CLUSTER" --tasks "$MIGRATION_TASK" \
  --query "tasks[0].containers[?name=='migrate'].exitCode | [0]" --output text)"
if [[ "$MIGRATION_EXIT" != "0" ]]; then
  die "migration failed (exit code $MIGRATION_EXIT); see log group /ecs/$PREFIX/migration. The service was not updated."
fi
outcome "would wait for the migration task, and stop here unless it exits 0" "migration succeeded"

# 5. API service --------------------------------------------------------------

deploy_stack ecs-api \
  "ImageUri=$IMAGE_URI" \
  "CertificateArn=$CERTIFICATE_ARN" \
  "TaskRoleArn=$API_TASK_ROLE_ARN" \
  "ExecutionRoleArn=$API_EXECUTION_ROLE_ARN" \
  "LoadBalancerScheme=$LOAD_BALANCER_SCHEME" \
  "AuthIssuer=$AUTH_ISSUER" \
  "AuthAudience=$AUTH_AUDIENCE" \
  "AuthJwksUrl=$AUTH_JWKS_URL" \
  "AccessLogBucket=$ACCESS_LOG_BUCKET" \
  "HealthCheckPath=$HEALTH_CHECK_PATH" \
  "RateLimitPer5Min=$WAF_RATE_LIMIT_PER_5MIN" \
  "EnableTracing=$API_TRACING" \
  "XRayDaemonImage=$XRAY_DAEMON_IMAGE" \
  "OperatorAccess=$OPERATOR_ACCESS"

# 6. Lambda functions ---------------------------------------------------------

say "lambda package"
run make lambda-package
ZIP_SHA="$(capture '<sha256-of-build/lambda.zip>' sha256sum build/lambda.zip)"
ZIP_SHA="${ZIP_SHA%% *}"
CODE_KEY="lambda/$PREFIX/$ZIP_SHA.zip"
if ((DRY_RUN)); then
  ZIP_CHECKSUM='<base64-sha256-of-build/lambda.zip>'
else
  [[ "$ZIP_SHA" =~ ^[0-9a-f]{64}$ ]] || die "sha256sum gave '$ZIP_SHA' for build/lambda.zip"
  ZIP_CHECKSUM="$(hex_to_base64 "$ZIP_SHA")"
fi
# The code goes only to a bucket of the expected account (a bucket of that name
# elsewhere gets nothing), and S3 stores it only if it arrives with this SHA-256.
if [[ -z "$ARTIFACT_BUCKET_OWNER" ]]; then
  ARTIFACT_BUCKET_OWNER="$(capture '<account-id>' "${AWS[@]}" sts get-caller-identity \
    --query Account --output text)"
fi
if ((!DRY_RUN)); then
  [[ "$ARTIFACT_BUCKET_OWNER" =~ ^[0-9]{12}$ ]] ||
    die "ARTIFACT_BUCKET_OWNER must be a 12-digit account id, not '$ARTIFACT_BUCKET_OWNER'"
fi
S3_OBJECT=(--bucket "$ARTIFACT_BUCKET" --key "$CODE_KEY" --expected-bucket-owner "$ARTIFACT_BUCKET_OWNER")

remote_checksum() {
  capture "$ZIP_CHECKSUM" "${AWS[@]}" s3api head-object "${S3_OBJECT[@]}" --checksum-mode ENABLED \
    --query ChecksumSHA256 --output text 2>/dev/null || true
}

if [[ "$(remote_checksum)" == "$ZIP_CHECKSUM" ]] && ((!DRY_RUN)); then
  say "s3://$ARTIFACT_BUCKET/$CODE_KEY already uploaded (SHA-256 verified)"
else
  run "${AWS[@]}" s3api put-object "${S3_OBJECT[@]}" --body build/lambda.zip \
    --checksum-algorithm SHA256 --checksum-sha256 "$ZIP_CHECKSUM" --output text
  uploaded="$(remote_checksum)"
  [[ "$uploaded" == "$ZIP_CHECKSUM" ]] ||
    die "s3://$ARTIFACT_BUCKET/$CODE_KEY has SHA-256 '$uploaded', not $ZIP_CHECKSUM of build/lambda.zip"
  outcome "would upload s3://$ARTIFACT_BUCKET/$CODE_KEY and stop unless S3 reports its SHA-256" \
    "s3://$ARTIFACT_BUCKET/$CODE_KEY uploaded (SHA-256 verified)"
fi

LAMBDA_PARAMETERS=(
  "CodeS3Bucket=$ARTIFACT_BUCKET"
  "CodeS3Key=$CODE_KEY"
  "StockEventsRoleArn=$STOCK_EVENTS_ROLE_ARN"
  "ReportRoleArn=$REPORT_ROLE_ARN"
  "AlarmTopicArn=$ALARM_TOPIC_ARN"
  "DbProxyEndpoint=$PROXY_ENDPOINT"
  "DbProxyReaderEndpoint=$PROXY_READER_ENDPOINT"
  "Tracing=$LAMBDA_TRACING"
  "StockEventsMaxConcurrency=$STOCK_EVENTS_MAX_CONCURRENCY"
  "ReservedConcurrency=$LAMBDA_RESERVED_CONCURRENCY"
  "SnapStart=$LAMBDA_SNAPSTART"
)
# The triggers invoke the alias `live`, on a published version, which freezes the
# code and the configuration both; CloudFormation publishes a new one only when
# FunctionRevision changes. So it names the zip (its SHA-256) and everything else
# a version freezes: this template and the stack's parameters (a proxy switched
# off must reach the alias before the proxy goes). The same state gives the same
# revision, so a re-run publishes nothing (and snapshots nothing).
if ((DRY_RUN)); then
  FUNCTION_REVISION='<zip-sha256-12>-<config-sha256-12>'
else
  lambda_config="$(printf '%s\n' "$PREFIX" "${LAMBDA_PARAMETERS[@]}" && cat cfn/lambda.yaml)"
  config_sha="$(sha256sum <<<"$lambda_config")"
  config_sha="${config_sha%% *}"
  [[ "$config_sha" =~ ^[0-9a-f]{64}$ ]] || die "sha256sum gave '$config_sha' for the lambda stack's configuration"
  FUNCTION_REVISION="${ZIP_SHA:0:12}-${config_sha:0:12}"
fi
say "functions: revision $FUNCTION_REVISION, SnapStart $LAMBDA_SNAPSTART, invoked through the alias live"
deploy_stack lambda "${LAMBDA_PARAMETERS[@]}" "FunctionRevision=$FUNCTION_REVISION"

# DB_PROXY=off with a proxy left over: the functions use the cluster now, so the
# proxy can go, and after it its role and the grants through it.
if [[ "$DB_PROXY" == off && -n "$EXISTING_PROXY_ID" ]]; then
  say "removing RDS Proxy $EXISTING_PROXY_ID (DB_PROXY=off)"
  run "${AWS[@]}" cloudformation delete-stack --stack-name "$PREFIX-proxy"
  run "${AWS[@]}" cloudformation wait stack-delete-complete --stack-name "$PREFIX-proxy"
  terraform_again false ""
fi

# 7. Dashboard ------------------------------------------------------------------

deploy_stack dashboard \
  "LoadBalancerFullName=$(stack_output ecs-api LoadBalancerFullName)" \
  "DbClusterIdentifier=$(stack_output aurora ClusterIdentifier)"

outcome "dry run: nothing was deployed; the commands above are what a deploy of $PREFIX at $IMAGE_TAG would run" \
  "deployed $PREFIX at $IMAGE_TAG"
