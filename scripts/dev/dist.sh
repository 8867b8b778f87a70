#!/bin/sh
# dist.sh - the release tarball of one platform (make dist).
#
#   scripts/dev/dist.sh BIN_DIR OUT_DIR
#
# VERSION is what BIN_DIR/devopsAgent version prints (make VERSION=... sets
# it at build time). Writes OUT_DIR/devops-agent-c-VERSION-OS-ARCH.tar.gz holding one directory
# of that name: devopsAgent, devopsDaemon, upgrader (mode 0755), the control
# scripts (scripts/linux, scripts/macos), README.md, docs/*.md and SHA256SUMS
# (sha256sum format, every other file of the directory); and next to it
# the tarball's own checksum, <tarball>.sha256. Prints the tarball's path.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 BIN_DIR OUT_DIR" >&2
	exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")/../.." && pwd)

os=$(uname -s | tr '[:upper:]' '[:lower:]')
[ "$os" = darwin ] && os=macos
case $(uname -m) in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac
for b in devopsAgent devopsDaemon upgrader; do
	if [ ! -x "$bin/$b" ]; then
		echo "dist: $bin/$b is missing (run make first)" >&2
		exit 1
	fi
done
version=$("$bin/devopsAgent" version)
case $version in
'' | *[!A-Za-z0-9._+-]*)
	echo "dist: $bin/devopsAgent version printed '$version'" >&2
	exit 1
	;;
esac
name="devops-agent-c-$version-$os-$arch"

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
d="$stage/$name"
mkdir -p "$d/scripts/linux" "$d/scripts/macos" "$d/docs"
for b in devopsAgent devopsDaemon upgrader; do
	cp "$bin/$b" "$d/$b"
	chmod 0755 "$d/$b"
done
cp "$here"/scripts/linux/*.sh "$d/scripts/linux/"
cp "$here"/scripts/macos/*.sh "$d/scripts/macos/"
chmod 0755 "$d"/scripts/*/*.sh
cp "$here/README.md" "$d/"
cp "$here"/docs/*.md "$d/docs/"
(cd "$d" && find . -type f | sed 's|^\./||' | LC_ALL=C sort >"$stage/files" &&
	xargs sha256sum <"$stage/files" >"$stage/SHA256SUMS" && mv "$stage/SHA256SUMS" .)
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz" "$name"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "$out/$name.tar.gz"
