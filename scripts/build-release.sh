#!/usr/bin/env bash
# The one release build: the Dockerfile's build stage runs exactly this, and so does CI, so a
# broken container build cannot land unnoticed on a machine without a Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin image-relay
