#!/bin/sh
# Image builds: what `make install` / `make build` need from the base's apt, and nothing the base
# already has. python:3.12-slim brings Python with venv and headers; a bare Debian/Ubuntu base (and
# nvidia/cuda) brings none, so python3, python3-venv and python3-dev come from the base's own release.
set -eu
pkgs="build-essential git make ca-certificates"
has_python() {
    python3 - <<'PY' 2>/dev/null
import ensurepip, os, sysconfig
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
PY
}
has_python || pkgs="$pkgs python3 python3-venv python3-dev"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends $pkgs
rm -rf /var/lib/apt/lists/*
