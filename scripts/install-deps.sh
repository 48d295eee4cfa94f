#!/usr/bin/env bash
# Install what image-relay's demo, tests and benchmarks need on a fresh Debian machine, and
# only what is missing: the CNCF distribution registry (Debian's docker-registry), skopeo,
# htpasswd for the auth-enabled test registry, curl, GNU time, python3.
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need docker-registry docker-registry
need skopeo skopeo
need htpasswd apache2-utils
need curl curl
need python3 python3
need ss iproute2
[[ -x /usr/bin/time ]] || missing+=(time)
# The Terraform checks install their tools into venvs; Debian's python3 needs python3-venv.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
