#!/bin/sh
# Run every unit-test program given as an argument and print one summary line:
# "unit: N passed, N failed". Exit 1 when any test failed or a program crashed.
# UNIT_WRAPPER (e.g. "valgrind --error-exitcode=99 --leak-check=full") wraps each.
pass=0
fail=0
status=0
for t in "$@"; do
	out=$(${UNIT_WRAPPER:-} "$t" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
	p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')
	f=$(printf '%s' "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0}))
	if [ "$rc" -ne 0 ]; then
		status=1
		[ -z "$line" ] && { echo "$t: crashed (exit $rc)"; fail=$((fail + 1)); }
	fi
done
echo "unit: $pass passed, $fail failed"
exit $status
