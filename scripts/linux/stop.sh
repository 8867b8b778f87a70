#!/bin/sh
# stop.sh - stop devopsDaemon first, then devopsAgent. Build workers (their
# own sessions) are never signalled.
#
# A pid from runtime/*.pid is signalled only when /proc/<pid>/exe is this
# install's binary (W3). Each process gets SIGTERM, then up to a grace period
# (daemon 10 s, agent $DEVOPS_STOP_GRACE_SEC or 15 s), and only then SIGKILL.
# With a systemd unit installed, the unit is stopped first so systemd does
# not restart the daemon. Works from any cwd: it uses its own directory.
set -u

cd "$(dirname -- "$0")" || exit 1
workdir=$(pwd -P)

# prop KEY: the value of KEY in .agent.properties (first one, trimmed).
prop() {
	[ -f .agent.properties ] || return 0
	sed -n "s/^[[:space:]]*$(printf '%s' "$1" | sed 's/\./\\./g')[[:space:]]*[=:][[:space:]]*//p" \
		.agent.properties | head -n 1 | tr -d '\r' | sed 's/[[:space:]]*$//'
}

# service_name: devops_agent_<devops.agent.id>, or "" when the id is unusable.
service_name() {
	id=$(prop devops.agent.id)
	case $id in
	'' | *[!A-Za-z0-9_.-]*) echo "" ;;
	*) echo "devops_agent_$id" ;;
	esac
}

is_root() {
	[ "$(id -u)" -eq 0 ]
}

# systemd_on: true when autostart goes through systemd on this machine.
systemd_on() {
	case ${DEVOPS_AUTOSTART:-auto} in
	systemd) return 0 ;;
	auto) [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 ;;
	*) return 1 ;;
	esac
}

# unit_file: where install.sh writes the unit (system unit as root, else user).
unit_file() {
	if is_root; then
		echo "${DEVOPS_SYSTEMD_SYSTEM_DIR:-/etc/systemd/system}/$service.service"
	else
		echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$service.service"
	fi
}

# sctl ARGS: systemctl for the system (root) or the user's manager.
sctl() {
	if is_root; then
		systemctl "$@"
	else
		systemctl --user "$@"
	fi
}

# read_pid NAME: the pid in runtime/NAME.pid when it is a number.
read_pid() {
	p=$(cat "runtime/$1.pid" 2>/dev/null) || return 1
	case $p in
	'' | *[!0-9]*) return 1 ;;
	esac
	echo "$p"
}

# pid_is PID BINARY: true when PID is alive and runs BINARY (W3).
pid_is() {
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) ||
		exe=$(ps -p "$1" -o comm= 2>/dev/null) || return 1
	[ "$exe" = "$2" ] || [ "$exe" = "$2 (deleted)" ]
}

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
if [ -n "$service" ] && systemd_on && [ -f "$(unit_file)" ]; then
	# KillMode=process: systemd stops the daemon only, never the agent.
	sctl stop "$service" || echo "stop.sh: systemctl stop $service failed" >&2
fi
stop_one daemon devopsDaemon 10 || rc=1
stop_one agent devopsAgent "$grace" || rc=1
exit $rc
