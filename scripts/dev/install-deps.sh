#!/bin/sh
# Install the Debian packages this project builds and tests with.
# Usage: scripts/dev/install-deps.sh [--check]
#   --check  only report what is missing; exit 1 if anything is.
# Installs with apt-get when run as root, otherwise through sudo when it exists.
set -eu

pkgs="build-essential pkg-config libcurl4-openssl-dev libcjson-dev libiniparser-dev
libssl-dev libarchive-dev python3 python3-pytest shellcheck clang cppcheck
clang-tidy valgrind unzip zip procps"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done

if [ -z "$missing" ]; then
	exit 0
fi
if [ "${1:-}" = "--check" ]; then
	echo "missing packages:$missing" >&2
	exit 1
fi

echo "install-deps: installing$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo"
else
	echo "install-deps: not root and no sudo; install:$missing" >&2
	exit 1
fi
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
