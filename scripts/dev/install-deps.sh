#!/bin/sh
# Install the Debian packages this project builds and tests with, by purpose.
#
# Usage: scripts/dev/install-deps.sh [--check] [PURPOSE ...]
#   PURPOSE  build     compiler, pkg-config and the -dev packages of the libraries
#            test      build + what `make check` and `make check-valgrind` run
#            analysis  build + cppcheck and clang-tidy (`make analyze`)
#            fuzz      build + clang and its sanitizer/libFuzzer runtimes
#                      (`make fuzz`, `make fuzz-smoke`)
#            bench     test + matplotlib for the plots of docs/benchmarks.md
#                      (`make bench`)
#            all       every purpose (the default)
#   --check  only report what is missing; exit 1 if anything is.
#
# The Makefile calls it with the purpose of each target, so `make`, `make
# check`, `make analyze` and `make fuzz-smoke` each install what they need.
# Packages are installed with --no-install-recommends, so every package a
# target needs is named here, even one that is only a Recommends elsewhere
# (libclang-rt-14-dev for clang's -fsanitize=fuzzer is one).
# Installs with apt-get when run as root, otherwise through sudo when it exists.
set -eu

pkgs_build="build-essential pkg-config libcurl4-openssl-dev libcjson-dev
libiniparser-dev libssl-dev libarchive-dev"
pkgs_test="python3 python3-pytest shellcheck valgrind unzip zip procps curl"
# Redis task queue (docs/queue.md): hiredis to build, a real redis-server to test.
pkgs_build="$pkgs_build libhiredis-dev"
pkgs_test="$pkgs_test redis-server redis-tools"
# Cron task source: a real etcd and etcdctl for its tests, croniter as the
# oracle of the cron expression parser.
pkgs_test="$pkgs_test etcd-server etcd-client python3-croniter"
# Operator side: the local metrics endpoint (libmicrohttpd), a real scrape in tests.
pkgs_build="$pkgs_build libmicrohttpd-dev"
pkgs_test="$pkgs_test prometheus"
# container builds (tests/integration/test_docker.py): a private dockerd, a
# registry with htpasswd auth (htpasswd from apache2-utils), tar for the image,
# rootful podman
pkgs_test="$pkgs_test docker.io docker-registry apache2-utils tar podman"
pkgs_analysis="cppcheck clang-tidy clang"
pkgs_fuzz="clang libclang-rt-14-dev"
pkgs_bench="python3-matplotlib"

check=0
purposes=""
for arg in "$@"; do
	case $arg in
	--check) check=1 ;;
	build | test | analysis | fuzz | bench) purposes="$purposes $arg" ;;
	all) purposes="$purposes test analysis fuzz bench" ;;
	*)
		echo "install-deps: unknown purpose '$arg' (build, test, analysis, fuzz, bench, all)" >&2
		exit 2
		;;
	esac
done
[ -n "$purposes" ] || purposes="test analysis fuzz"

pkgs=$pkgs_build
for p in $purposes; do
	case $p in
	test) pkgs="$pkgs $pkgs_test" ;;
	analysis) pkgs="$pkgs $pkgs_analysis" ;;
	fuzz) pkgs="$pkgs $pkgs_fuzz" ;;
	bench) pkgs="$pkgs $pkgs_test $pkgs_bench" ;;
	esac
done

# One dpkg-query for all of them: cheap enough to run on every make.
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null |
	awk '$NF == "installed" { print $1 }') || true
missing=""
for p in $pkgs; do
	case " $missing " in *" $p "*) continue ;; esac
	printf '%s\n' "$installed" | grep -qx "$p" || missing="$missing $p"
done

if [ -z "$missing" ]; then
	exit 0
fi
if [ "$check" -eq 1 ]; then
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
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
