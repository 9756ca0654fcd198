#!/usr/bin/env bash
# Fetch the `emoji` dataset: the 64×64 images of two freely licensed emoji sets and their metadata,
# from the npm packages emoji-datasource-google (Noto Emoji, Apache-2.0) and emoji-datasource-twitter
# (Twemoji, CC-BY-4.0), at a pinned version, with `npm pack` (installs Debian's npm when missing).
# Never the Apple or Facebook images of the same project: they are not freely licensed.
#
#   scripts/fetch_emoji.sh [--data-dir DIR]
#
# DIR defaults to $GANSERVE_DATA/emoji, else ~/.cache/ganserve/emoji — where `--dataset emoji` looks
# (pass the same --data-dir to training otherwise). Only each package's emoji.json, LICENSE, README.md and
# img/VENDOR/64/ are kept (~41 MB); a folder already holding this version is left alone.
set -euo pipefail
VERSION=16.0.0
# npm's sha512 integrity of each tarball at VERSION: a changed upstream file fails the fetch.
declare -A INTEGRITY=(
  [google]="sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="
  [twitter]="sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="
)

dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) [ $# -ge 2 ] || { echo "fetch_emoji: --data-dir needs a folder" >&2; exit 2; }; dir=$2; shift 2 ;;
    --data-dir=*) dir=${1#--data-dir=}; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch_emoji: unknown option $1 (usage: $0 [--data-dir DIR])" >&2; exit 2 ;;
  esac
done
if [ -z "$dir" ]; then
  if [ -n "${GANSERVE_DATA:-}" ]; then dir=$GANSERVE_DATA/emoji; else dir=$HOME/.cache/ganserve/emoji; fi
fi

if ! command -v npm >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "fetch_emoji: apt-get install npm"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "fetch_emoji: needs npm (Debian: apt-get install npm)" >&2
    exit 1
  fi
fi

mkdir -p "$dir"
for vendor in google twitter; do
  pkg=emoji-datasource-$vendor
  dest=$dir/$pkg
  if [ "$(cat "$dest/.version" 2>/dev/null)" = "$VERSION" ]; then
    echo "fetch_emoji: $dest already holds $pkg@$VERSION"
    continue
  fi
  tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --json "$pkg@$VERSION" > pack.json)
  got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$tmp/pack.json")
  if [ "$got" != "${INTEGRITY[$vendor]}" ]; then
    echo "fetch_emoji: $pkg@$VERSION has integrity $got, expected ${INTEGRITY[$vendor]}" >&2
    exit 1
  fi
  mkdir -p "$tmp/out"
  tar -xzf "$tmp/$pkg-$VERSION.tgz" -C "$tmp/out" --strip-components=1 \
    package/emoji.json package/LICENSE package/README.md "package/img/$vendor/64"
  echo "$VERSION" > "$tmp/out/.version"
  rm -rf "$dest"
  mv "$tmp/out" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch_emoji: $dest ($(find "$dest/img/$vendor/64" -name '*.png' | wc -l) images)"
done
echo "fetch_emoji: emoji ready in $dir"
