#!/usr/bin/env bash
# Fetches a real head CT for the tests and benchmarks: Cranium.inv3 from Debian's
# `invesalius-examples` (GPL-2; fetched at run time, never committed), into target/real-ct/
# (or the folder given). Prints the file's path. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-target/real-ct}"
ct="$dest/Cranium.inv3"
if [ -s "$ct" ]; then
  echo "$ct"
  exit 0
fi
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
# apt-get download needs the package lists; refresh them only when the first try fails.
if ! (cd "$work" && apt-get download -qq invesalius-examples >/dev/null 2>&1); then
  $sudo_cmd apt-get update -qq
  (cd "$work" && apt-get download -qq invesalius-examples >/dev/null 2>&1)
fi
dpkg-deb -x "$work"/invesalius-examples_*.deb "$work/x"
found="$(find "$work/x" -name Cranium.inv3 | head -n 1)"
[ -n "$found" ] || { echo "invesalius-examples holds no Cranium.inv3" >&2; exit 1; }
cp "$found" "$ct.partial"
mv "$ct.partial" "$ct"
echo "$ct"
