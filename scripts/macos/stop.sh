#!/bin/sh
# stop.sh - stop devopsDaemon first, then devopsAgent. Build workers (their
# own sessions) are never signalled.
#
# When the launchd job of install.sh is loaded it is booted out first (launchd
# sends the daemon SIGTERM and will not restart it). Then each pid from
# runtime/*.pid is signalled only when it runs this install's binary (W3):
# SIGTERM, a grace period (daemon 10 s, agent $DEVOPS_STOP_GRACE_SEC or 15 s),
# then SIGKILL. Works from any cwd: it uses its own directory.
set -u

cd "$(dirname -- "$0")" || exit 1
workdir=$(pwd -P)
# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
. ./agent_lib.sh

# wait_gone PID BINARY SECONDS: wait until PID no longer runs BINARY.
wait_gone() {
	n=$(($3 * 10))
	while pid_is "$1" "$2"; do
		[ "$n" -le 0 ] && return 1
		n=$((n - 1))
		sleep 0.1
	done
}

# stop_one NAME BINARY GRACE: SIGTERM, wait GRACE seconds, then SIGKILL.
stop_one() {
	if ! pid=$(read_pid "$1"); then
		echo "$1: not running (no runtime/$1.pid)"
		return 0
	fi
	if ! pid_is "$pid" "$workdir/$2"; then
		echo "$1: not running (runtime/$1.pid names pid $pid, which is not $2: left alone)"
		return 0
	fi
	echo "$1: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || return 0
	wait_gone "$pid" "$workdir/$2" "$3" && { echo "$1: stopped"; return 0; }
	echo "$1: pid $pid still runs after $3 s: sending SIGKILL"
	pid_is "$pid" "$workdir/$2" && kill -KILL "$pid" 2>/dev/null
	wait_gone "$pid" "$workdir/$2" 5 && { echo "$1: killed"; return 0; }
	echo "stop.sh: $1 pid $pid survived SIGKILL" >&2
	return 1
}

service=$(service_name)
grace=${DEVOPS_STOP_GRACE_SEC:-15}
case $grace in
'' | *[!0-9]*) grace=15 ;;
esac

rc=0
if [ -n "$service" ] && [ -f "$(plist_file)" ]; then
	launchd_stop "$(plist_file)"
fi
stop_one daemon devopsDaemon 10 || rc=1
stop_one agent devopsAgent "$grace" || rc=1
exit $rc
