#!/bin/sh
# start.sh [debug] - start devopsDaemon, which starts and watches devopsAgent.
#
# Idempotent: when this install's daemon already runs, it says so and exits 0.
# When install.sh registered a systemd unit, the daemon is started through
# systemctl so it runs inside its unit; otherwise (or with "debug") it is
# started directly with nohup. Works from any cwd: it uses its own directory.
# Environment: DEVOPS_AUTOSTART (see docs/scripts.md).
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

# pid_is PID BINARY: true when PID is alive and runs BINARY (never trust a
# pid file alone: after a reboot it may name anything, W3).
pid_is() {
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) ||
		exe=$(ps -p "$1" -o comm= 2>/dev/null) || return 1
	[ "$exe" = "$2" ] || [ "$exe" = "$2 (deleted)" ]
}

# daemon_pid: print the pid of this install's running daemon, or fail.
daemon_pid() {
	p=$(read_pid daemon) && pid_is "$p" "$workdir/devopsDaemon" && echo "$p"
}

# wait_daemon SECONDS: wait for the daemon to run and print its pid.
wait_daemon() {
	n=$(($1 * 10))
	while ! daemon_pid; do
		[ "$n" -le 0 ] && return 1
		n=$((n - 1))
		sleep 0.1
	done
}

service=$(service_name)

if [ ! -d jdk ] && [ -f jre.zip ]; then
	unzip -q -o jre.zip -d jdk || echo "start.sh: warning: cannot unzip jre.zip into jdk/" >&2
fi
# Builds may run as another user (devops.slave.user): GoAgent's modes.
for d in workspace logs; do
	[ -d "$d" ] || { mkdir -p "$d" && chmod 777 "$d"; }
done

if pid=$(daemon_pid); then
	echo "devopsDaemon is already running (pid $pid)"
	exit 0
fi
chmod +x devopsDaemon devopsAgent 2>/dev/null

how=""
if [ "${1:-}" != debug ] && [ -n "$service" ] && systemd_on && [ -f "$(unit_file)" ]; then
	if sctl start "$service"; then
		how="systemd unit $service"
	else
		echo "start.sh: systemctl start $service failed; starting directly" >&2
	fi
fi
if [ -z "$how" ]; then
	nohup "$workdir/devopsDaemon" ${1:+"$1"} >/dev/null 2>&1 &
	how="nohup"
fi

if pid=$(wait_daemon 10); then
	echo "devopsDaemon started (pid $pid, $how)"
	exit 0
fi
echo "start.sh: devopsDaemon did not start; see $workdir/logs/devopsDaemon.log" >&2
exit 1
