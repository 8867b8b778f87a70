# shellcheck shell=sh disable=SC2154 # $service is set by the sourcing script
# agent_lib.sh - helpers shared by install.sh, start.sh, stop.sh and
# uninstall.sh (Linux). It is sourced, not run: each script first enters the
# install dir, then does `. ./agent_lib.sh`. It only defines functions.
#
# Provides: prop, service_name, is_root, systemd_on, unit_file, sctl (the
# service name and systemd unit); read_pid, pid_is (pid files checked against
# the running binary, W3); rc_local, marked, drop_marked, has_marked,
# autostart_remove (the autostart entries of install.sh).
# The functions that name the service use $service (devops_agent_<id>),
# which the sourcing script sets first.

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

# is_root: true when running as root.
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

# rc_local: the rc.local file of this system.
rc_local() {
	if [ -n "${DEVOPS_RC_LOCAL:-}" ]; then
		echo "$DEVOPS_RC_LOCAL"
	elif [ -f /etc/rc.d/rc.local ]; then
		echo /etc/rc.d/rc.local
	else
		echo /etc/rc.local
	fi
}

# marked: true when stdin has a line ending in "# $service".
marked() {
	awk -v m="# $service" '{
		n = length($0) - length(m) + 1
		if (n >= 1 && substr($0, n) == m) found = 1
	} END { exit !found }'
}

# drop_marked: copy stdin to stdout without the lines ending in "# $service".
drop_marked() {
	awk -v m="# $service" '{
		n = length($0) - length(m) + 1
		if (n >= 1 && substr($0, n) == m) next
		print
	}'
}

# has_marked FILE: true when FILE has a line ending in "# $service".
has_marked() {
	[ -f "$1" ] && marked <"$1"
}

# autostart_remove: remove every autostart entry of this agent (systemd unit,
# rc.local line, crontab line).
autostart_remove() {
	unit=$(unit_file)
	if [ -f "$unit" ]; then
		# KillMode=process: this stops the daemon only.
		sctl stop "$service" 2>/dev/null
		sctl disable "$service" 2>/dev/null
		rm -f "$unit"
		sctl daemon-reload 2>/dev/null
		echo "removed systemd unit $unit"
	fi
	rc=$(rc_local)
	if is_root && has_marked "$rc"; then
		drop_marked <"$rc" >"$rc.devops.tmp" && cat "$rc.devops.tmp" >"$rc"
		rm -f "$rc.devops.tmp"
		echo "removed $service from $rc"
	fi
	if command -v crontab >/dev/null 2>&1 && tab=$(crontab -l 2>/dev/null) &&
		printf '%s\n' "$tab" | marked; then
		printf '%s\n' "$tab" | drop_marked | crontab -
		echo "removed $service from the crontab"
	fi
}
