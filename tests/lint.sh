#!/bin/sh
# Static checks run by `make check`:
#  1. shellcheck on every shell script of the project;
#  2. a ban on unsafe C calls (sprintf, strcpy, strcat, strtok, atoi, system).
# Prints "lint: N passed, N failed" and exits 1 on any failure.
cd "$(dirname "$0")/.." || exit 1
pass=0
fail=0

scripts=$(find scripts tests bench -name '*.sh' -type f 2>/dev/null | sort)
for s in $scripts; do
	if shellcheck -x "$s"; then
		pass=$((pass + 1))
	else
		echo "lint: shellcheck failed: $s"
		fail=$((fail + 1))
	fi
done

# Every C file of the project, new ones included: programs, tests, fuzz targets.
banned='(^|[^_a-z0-9.>])(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|system)[[:space:]]*\('
csrc=$(find common agent daemon upgrader fuzz tests bench -name '*.[ch]' -type f 2>/dev/null | sort)
# shellcheck disable=SC2086
hits=$(grep -nE "$banned" $csrc /dev/null |
	grep -vE '^\S+:[0-9]+:\s*(\*|/\*|//)')
if [ -n "$hits" ]; then
	echo "lint: banned calls:"
	echo "$hits"
	fail=$((fail + 1))
else
	pass=$((pass + 1))
fi

echo "lint: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
