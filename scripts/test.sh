#!/usr/bin/env bash
# Run every test: unit tests, and integration tests against real registries that the tests
# start themselves on loopback ports (Debian's docker-registry, with htpasswd where auth matters).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --locked --all-targets "$@"
