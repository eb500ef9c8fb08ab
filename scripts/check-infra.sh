#!/usr/bin/env bash
# Offline checks of infra/: cfn-lint, sam validate --lint, the SAM-translated template (circular
# dependencies only show up after translation), the HTTP routes `sam local start-api` would serve,
# and the JSON fixtures. No AWS account, no Docker, no network beyond pip when a tool is missing.
# Usage: scripts/check-infra.sh        (from anywhere; exits non-zero on the first failure)
set -euo pipefail

export AWS_REGION=ap-northeast-2
export AWS_DEFAULT_REGION=ap-northeast-2
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export SAM_CLI_TELEMETRY=0

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TEMPLATE=infra/template.yaml
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PY=python3
fail() { echo "check-infra: FAILED at $1" >&2; exit 1; }

# Runs "$@" quietly; on failure prints its output and stops.
step() {
    local name=$1; shift
    if ! "$@" >"$WORK/out" 2>&1; then
        cat "$WORK/out" >&2
        fail "$name"
    fi
}

pip_install() {
    "$PY" -m pip install --quiet --disable-pip-version-check "$@" >"$WORK/pip" 2>&1 \
        || { cat "$WORK/pip" >&2; fail "pip install $*"; }
}
command -v cfn-lint >/dev/null 2>&1 || pip_install cfn-lint
command -v sam >/dev/null 2>&1 || pip_install aws-sam-cli
# Steps 3, 4 and 6 import SAM's Python packages: python3 must have them even when `sam` came from elsewhere.
"$PY" -c 'import samtranslator, samcli' >/dev/null 2>&1 || pip_install aws-sam-cli
hash -r

[[ -f $TEMPLATE ]] || fail "missing $TEMPLATE"

# 1. cfn-lint on the SAM template (warnings count as failures: non-zero exit).
step "cfn-lint $TEMPLATE" cfn-lint "$TEMPLATE"

# 2. SAM's own validation plus its lint pass.
step "sam validate --lint" sam validate --lint -t "$TEMPLATE" --region "$AWS_REGION"

# 3. Translate the SAM template to plain CloudFormation and lint that: the linters above do not
#    report circular dependencies between resources that SAM generates (e.g. an HTTP API body that
#    references a function whose environment references the API).
step "SAM translation" "$PY" - "$TEMPLATE" "$WORK/translated.json" <<'PY'
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    template = yaml_parse(f.read())
for resource in template["Resources"].values():
    if resource.get("Type") == "AWS::Serverless::Function":
        # sam build/package replace the local CodeUri with an S3 location; do the same.
        resource["Properties"]["CodeUri"] = "s3://placeholder-artifacts/code.zip"

class NoManagedPolicies:
    def load(self):
        return {}

with open(dst, "w", encoding="utf-8") as f:
    json.dump(transform(template, {}, NoManagedPolicies()), f, indent=1)
PY
step "cfn-lint on the translated template" cfn-lint "$WORK/translated.json"

# 4. The routes sam local start-api would serve, and the functions it would run.
step "HTTP routes as seen by SAM CLI" "$PY" - "$TEMPLATE" <<'PY'
import logging, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)
from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

stacks, _ = SamLocalStackProvider.get_stacks(sys.argv[1])
routes = sorted((m, r.path, r.function_name) for r in ApiProvider(stacks).api.routes for m in r.methods)
api = "SubscriptionApiFunction"
expected = sorted([
    ("POST", "/billing/prepare", "BillingCallbackFunction"),
    ("GET", "/billing/callback", "BillingCallbackFunction"),
    ("POST", "/webhooks/iamport", "PaymentWebhookFunction"),
    ("GET", "/subscriptions/{id}", api),
    ("GET", "/users/{user_id}/subscriptions", api),
    ("GET", "/subscriptions/{id}/charges", api),
    ("GET", "/subscriptions/{id}/cancellation-quote", api),
    ("POST", "/subscriptions/{id}/cancel", api),
    ("POST", "/subscriptions/{id}/resume", api),
    ("POST", "/subscriptions/{id}/pause", api),
    ("POST", "/subscriptions/{id}/plan", api),
    ("POST", "/subscriptions/{id}/payment-method", api),
    ("POST", "/subscriptions/{id}/consent", api),
    ("POST", "/subscriptions/{id}/price-change", api),
    ("POST", "/subscriptions/{id}/price-change/consent", api),
    ("POST", "/subscriptions/{id}/price-change/decline", api),
    ("POST", "/subscriptions/{id}/portal-link", api),
    ("GET", "/portal/{token}", api),
    ("GET", "/charges/needs-review", api),
    ("GET", "/subscriptions", api),
    ("POST", "/charges/{merchant_uid}/refund", api),
    ("POST", "/charges/{merchant_uid}/resolve", api),
    ("POST", "/charges/{merchant_uid}/refunds/{key}/dismiss", api),
    ("GET", "/plans", api),
    ("POST", "/plans", api),
    ("GET", "/plans/{id}", api),
    ("POST", "/plans/{id}/price-change", api),
    ("POST", "/coupons", api),
    ("GET", "/coupons/{id}", api),
    ("POST", "/subscriptions/{id}/coupon", api),
])
if routes != expected:
    sys.exit(f"routes {routes} != expected {expected}")
binaries = {f.name: (f.metadata or {}).get("BuildProperties", {}).get("Binary")
            for f in SamFunctionProvider(stacks).get_all()}
want = {"BillingCallbackFunction": "billing-callback", "PaymentWebhookFunction": "payment-webhook",
        "ScheduledChargeFunction": "scheduled-charge", "SubscriptionApiFunction": "subscription-api",
        "EventPublisherFunction": "event-publisher", "ChargeWorkerFunction": "charge-worker"}
if binaries != want:
    sys.exit(f"functions/binaries {binaries} != expected {want}")
PY

# 5. JSON fixtures parse.
shopt -s nullglob
events=(infra/events/*.json)
(( ${#events[@]} > 0 )) || fail "no infra/events/*.json"
for f in "${events[@]}" infra/env.local.json; do
    step "JSON syntax of $f" "$PY" -m json.tool "$f"
done

# 6. env.local.json only names variables the template declares (sam local drops the others).
step "env.local.json keys declared in the template" "$PY" - "$TEMPLATE" infra/env.local.json <<'PY'
import json, sys
from samtranslator.yaml_helper import yaml_parse

with open(sys.argv[1], encoding="utf-8") as f:
    template = yaml_parse(f.read())
declared = set(template["Globals"]["Function"]["Environment"]["Variables"])
for name, resource in template["Resources"].items():
    if resource.get("Type") == "AWS::Serverless::Function":
        env = resource["Properties"].get("Environment", {}).get("Variables", {})
        declared |= set(env)
with open(sys.argv[2], encoding="utf-8") as f:
    local = json.load(f)
functions = {n for n, r in template["Resources"].items() if r.get("Type") == "AWS::Serverless::Function"}
problems = [f"unknown section {s}" for s in local if s != "Parameters" and s not in functions]
problems += [f"{s}.{k} is not declared in the template" for s, kv in local.items() for k in kv if k not in declared]
if problems:
    sys.exit("\n".join(problems))
PY

echo "check-infra: OK (cfn-lint, sam validate --lint, translated template, 30 routes, ${#events[@]} events, env.local.json)"
