#!/bin/sh
# uninstall.sh - remove the agent's autostart entry (systemd unit, rc.local
# line or crontab line) and stop the daemon and the agent (stop.sh).
# It deletes nothing else: the install dir, its logs and workspace stay.
# Linger (loginctl enable-linger) is left on: other services may need it.
set -u

cd "$(dirname -- "$0")" || exit 1

# prop KEY: the value of KEY in .agent.properties (first one, trimmed).
prop() {
	[ -f .agent.properties ] || return 0
	sed -n "s/^[[:space:]]*$(printf '%s' "$1" | sed 's/\./\\./g')[[:space:]]*[=:][[:space:]]*//p" \
		.agent.properties | head -n 1 | tr -d '\r' | sed 's/[[:space:]]*$//'
}

is_root() {
	[ "$(id -u)" -eq 0 ]
}

# sctl ARGS: systemctl for the system (root) or the user's manager.
sctl() {
	if is_root; then
		systemctl "$@"
	else
		systemctl --user "$@"
	fi
}

# drop_marked: copy stdin to stdout without the lines ending in "# $service".
drop_marked() {
	awk -v m="# $service" '{
		n = length($0) - length(m) + 1
		if (n >= 1 && substr($0, n) == m) next
		print
	}'
}

# marked: true when stdin has a line ending in "# $service".
marked() {
	awk -v m="# $service" '{
		n = length($0) - length(m) + 1
		if (n >= 1 && substr($0, n) == m) found = 1
	} END { exit !found }'
}

# has_marked FILE: true when FILE has a line ending in "# $service".
has_marked() {
	[ -f "$1" ] && marked <"$1"
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

# unit_file: where install.sh writes the unit (system unit as root, else user).
unit_file() {
	if is_root; then
		echo "${DEVOPS_SYSTEMD_SYSTEM_DIR:-/etc/systemd/system}/$service.service"
	else
		echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$service.service"
	fi
}

id=$(prop devops.agent.id)
case $id in
'' | *[!A-Za-z0-9_.-]*)
	echo "uninstall.sh: no usable devops.agent.id in .agent.properties:" \
		"no autostart entry to remove" >&2
	service=""
	;;
*) service="devops_agent_$id" ;;
esac

if [ -n "$service" ]; then
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
fi

sh ./stop.sh
