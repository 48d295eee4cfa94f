#!/usr/bin/env bash
# The main job, end to end on this machine: two real registries on loopback, a real
# two-platform image pushed to the first with skopeo, relayed to the second by image-relay,
# then checked byte for byte. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# IMAGE_RELAY_BIN: run another build (the tests pass theirs) instead of building the release.
if [[ -n "${IMAGE_RELAY_BIN:-}" ]]; then
  relay=$IMAGE_RELAY_BIN
else
  bash scripts/build-release.sh
  relay=$PWD/target/release/image-relay
fi

work=$(mktemp -d /tmp/image-relay-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Runs in this shell, not in $(...): a pid recorded in a subshell is lost with it, and the
# cleanup trap would leave the registry running.
start_registry() { # name -> sets $registry to host:port
  local name=$1 port; port=$(free_port)
  mkdir -p "$work/$name"
  cat >"$work/$name/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $work/$name/storage}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port, secret: demo-$port}
YML
  docker-registry serve "$work/$name/config.yml" >"$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  registry="127.0.0.1:$port"
}

start_registry source; src=$registry
start_registry partner; dst=$registry
echo "source registry  $src"
echo "partner registry $dst"

echo "--- building a two-platform image and pushing it to the source with skopeo"
want=$(python3 scripts/make-demo-image.py "$work/layout" v1.0.0)
skopeo copy -q --all --preserve-digests --dest-tls-verify=false "oci:$work/layout:v1.0.0" "docker://$src/releases/app:v1.0.0"

port=$(free_port)
cat >"$work/rules.toml" <<TOML
[[rule]]
name = "app-to-partner"
source = "$src/releases"
images = ["app"]
tags = ['v[0-9]+\.[0-9]+\.[0-9]+']
exclude_tags = [".*-rc.*"]
targets = ["$dst/incoming"]

[registry."$src"]
auth = "none"
[registry."$dst"]
auth = "none"
TOML
echo "--- rules"
"$relay" rules check "$work/rules.toml"

# The notification Artifact Registry publishes to the gcr topic, as Pub/Sub pushes it.
notification="{\"action\":\"INSERT\",\"digest\":\"$src/releases/app@$want\",\"tag\":\"$src/releases/app:v1.0.0\"}"
echo "$notification" >"$work/event.json"
echo "--- dry run: image-relay plan"
"$relay" plan --rules "$work/rules.toml" "$work/event.json"

echo "--- image-relay serve on 127.0.0.1:$port"
"$relay" serve --rules "$work/rules.toml" --listen-address 127.0.0.1 --port "$port" --push-auth none \
  --log-format text 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
delivery="{\"message\":{\"data\":\"$(printf %s "$notification" | base64 -w0)\",\"messageId\":\"1001\",\"publishTime\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\"},\"subscription\":\"projects/demo/subscriptions/image-relay\"}"
echo "--- POST / (a Pub/Sub push delivery)"
curl -sS -w '\nHTTP %{http_code}\n' -H 'content-type: application/json' -d "$delivery" "http://127.0.0.1:$port/"

echo "--- checking the partner registry"
got=$(skopeo inspect --raw --tls-verify=false "docker://$dst/incoming/app:v1.0.0" | sha256sum | cut -d' ' -f1)
echo "source digest  $want"
echo "partner digest sha256:$got"
[[ "sha256:$got" == "$want" ]] || { echo "DIGEST MISMATCH" >&2; cat "$work/serve.log" >&2; exit 1; }
for arch in amd64 arm64; do
  skopeo inspect --tls-verify=false --override-arch "$arch" "docker://$dst/incoming/app:v1.0.0" >/dev/null
  echo "platform linux/$arch pullable from the partner registry"
done

echo "--- the same delivery again (Pub/Sub delivers at least once): nothing to do"
curl -sS -w '\nHTTP %{http_code}\n' -H 'content-type: application/json' -d "$delivery" "http://127.0.0.1:$port/"
echo "--- metrics"
curl -sS "http://127.0.0.1:$port/metrics" | grep -E '^image_relay_(events|copies)_total'
echo "demo OK: the service relayed the release image to the partner registry byte for byte"
