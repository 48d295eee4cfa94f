#!/usr/bin/env bash
# Offline checks of the Terraform under terraform/. Nothing is planned or applied and no cloud
# is contacted; the only network use is pip installing the two pinned tools from PyPI the
# first time (the venvs under target/tf-venv are reused after that).
#
#   1. every .tf file parses (python-hcl2);
#   2. every variable has a description and a type; every module pins hashicorp/google ~> 6.x;
#   3. IAM is additive only (google_*_iam_member; no *_iam_binding / *_iam_policy) and nothing
#      is granted to allUsers / allAuthenticatedUsers;
#   4. checkov finds nothing, except checks skipped in place with
#      `#checkov:skip=CKV_...:reason` where the reason is written out;
#   5. `terraform fmt -check`, when a terraform binary is on PATH (it is optional: the google
#      provider cannot be downloaded offline, so `terraform validate` is not run).
set -euo pipefail
cd "$(dirname "$0")/.."

TF_DIR=terraform
VENV=target/tf-venv
HCL2_SPEC="python-hcl2==8.1.4"
CHECKOV_SPEC="checkov==3.3.30"
PYTHON=${PYTHON:-python3}

failed=0
fail() {
    echo "check-terraform: $*" >&2
    failed=1
}

# python-hcl2 and checkov's own HCL fork (bc-python-hcl2) both install a top-level `hcl2`
# package and overwrite each other's files, so each tool gets its own venv.
ensure_venv() {
    local dir=$1 spec=$2 stamp
    stamp="$spec $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    if [[ -x $dir/bin/python && -f $dir/.installed && "$(cat "$dir/.installed")" == "$stamp" ]]; then
        return
    fi
    echo "check-terraform: installing $spec into $dir" >&2
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec"
    echo "$stamp" >"$dir/.installed"
}

ensure_venv "$VENV/hcl2" "$HCL2_SPEC"
ensure_venv "$VENV/checkov" "$CHECKOV_SPEC"

mapfile -t tf_files < <(find "$TF_DIR" -name .terraform -prune -o -type f -name '*.tf' -print | sort)
if ((${#tf_files[@]} == 0)); then
    echo "check-terraform: no .tf files under $TF_DIR" >&2
    exit 1
fi

# --- 1-3: parse, variables, provider pins, IAM resource kinds --------------------------------
if ! "$VENV/hcl2/bin/python" - "${tf_files[@]}" <<'PY'; then
import os
import re
import sys

import hcl2

def unquote(s):
    s = str(s).strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return s[1:-1]
    return s

ok = True
def bad(msg):
    global ok
    ok = False
    print(f"check-terraform: {msg}", file=sys.stderr)

pinned_dirs, tf_dirs = set(), set()
for path in sys.argv[1:]:
    tf_dirs.add(os.path.dirname(path))
    try:
        with open(path, encoding="utf-8") as f:
            doc = hcl2.load(f)
    except Exception as e:  # any parse failure, whatever the parser raises
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        bad(f"{path}: HCL parse error: {first}")
        continue

    for block in doc.get("variable", []):
        for name, body in block.items():
            name = unquote(name)
            desc = unquote(body.get("description", "")) if isinstance(body, dict) else ""
            if not desc.strip():
                bad(f'{path}: variable "{name}" has no description')
            if not isinstance(body, dict) or "type" not in body:
                bad(f'{path}: variable "{name}" has no type')

    for block in doc.get("resource", []):
        for kind in block:
            kind = unquote(kind)
            if re.search(r"_iam_(binding|policy)$", kind):
                bad(f'{path}: resource "{kind}": only additive *_iam_member grants are allowed')

    for tf in doc.get("terraform", []):
        for rp in tf.get("required_providers", []):
            google = rp.get("google") if isinstance(rp, dict) else None
            if isinstance(google, dict):
                version = unquote(google.get("version", ""))
                source = unquote(google.get("source", ""))
                if source == "hashicorp/google" and re.fullmatch(r"~>\s*6\.\d+(\.\d+)?", version):
                    pinned_dirs.add(os.path.dirname(path))
                else:
                    bad(f'{path}: google provider must be source "hashicorp/google", version "~> 6.x" (found "{source}", "{version}")')

for d in sorted(tf_dirs - pinned_dirs):
    bad(f"{d}: no required_providers pin of hashicorp/google ~> 6.x (versions.tf)")

sys.exit(0 if ok else 1)
PY
    failed=1
fi

# The parser-based check above sees resource kinds; grep as well, so a file that does not parse
# cannot hide one.
if grep -rnE --include='*.tf' 'resource[[:space:]]+"[a-z0-9_]+_iam_(binding|policy)"' "$TF_DIR" >&2; then
    fail "non-additive IAM resources above: use google_*_iam_member"
fi
if grep -rnE --include='*.tf' '\ball(Authenticated)?Users\b' "$TF_DIR" >&2; then
    fail "public principals (allUsers / allAuthenticatedUsers) above"
fi

# --- 4: checkov --------------------------------------------------------------------------------
# Skips live next to the resource, with their reason; a config file or CLI flag could skip
# silently, so there must be none.
while IFS= read -r cfg; do
    fail "$cfg: checkov config files are not allowed; skip in place with #checkov:skip=ID:reason"
done < <(find . "$TF_DIR" -maxdepth 1 \( -name .checkov.yaml -o -name .checkov.yml \) 2>/dev/null | sort -u)

while IFS= read -r hit; do
    loc=${hit%%:*}
    rest=${hit#*:}
    line=${rest%%:*}
    text=${rest#*:}
    if ! [[ $text =~ checkov:skip=(CKV2?_[A-Z0-9]+_[0-9]+):[[:space:]]*([^[:space:]].{9,}) ]]; then
        fail "$loc:$line: checkov skip without a written reason (want #checkov:skip=CKV_...:why, at least 10 characters)"
    fi
done < <(grep -rnE --include='*.tf' 'checkov:skip' "$TF_DIR" || true)

# Offline: --skip-download stops the guideline/mapping download from Prisma Cloud (the only
# request checkov 3.3 makes for a local terraform scan), CKV_SKIP_PACKAGE_UPDATE_CHECK its PyPI
# version check; no API key means nothing is uploaded. A clean environment keeps CKV_* variables
# (CKV_SKIP_CHECK, CKV_SOFT_FAIL...) from the caller out, and an empty HOME its ~/.checkov.yaml.
ck_home=$VENV/checkov-home
mkdir -p "$ck_home"
ck_out=$(mktemp)
trap 'rm -f "$ck_out"' EXIT
set +e
env -i PATH="/usr/bin:/bin" HOME="$PWD/$ck_home" LANG=C.UTF-8 \
    CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE CKV_PARSE_ERROR_FAIL=true \
    "$VENV/checkov/bin/checkov" -d "$TF_DIR" --framework terraform --quiet --compact \
    --skip-download --download-external-modules false >"$ck_out" 2>&1
ck_rc=$?
set -e
cat "$ck_out"
if ((ck_rc != 0)); then
    fail "checkov failed (exit $ck_rc): fix the findings above, or skip in place with #checkov:skip=ID:reason"
elif ! grep -qE '^Passed checks: [0-9]+, Failed checks: 0, Skipped checks: [0-9]+' "$ck_out"; then
    fail "checkov printed no terraform results: did it scan $TF_DIR?"
fi

# --- 5: formatting -----------------------------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
    if ! terraform fmt -check -recursive -diff "$TF_DIR" 2>/dev/null; then
        fail "terraform fmt: run \`terraform fmt -recursive $TF_DIR\`"
    fi
else
    echo "check-terraform: terraform not on PATH: formatting not checked" >&2
fi

if ((failed)); then
    echo "check-terraform: FAILED (${SECONDS}s)" >&2
    exit 1
fi
echo "check-terraform: OK: ${#tf_files[@]} files (${SECONDS}s)"
