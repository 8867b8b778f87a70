# shellcheck shell=sh disable=SC2154 # $service is set by the sourcing script
# agent_lib.sh - helpers shared by install.sh, start.sh, stop.sh and
# uninstall.sh (macOS). It is sourced, not run: each script first enters the
# install dir, then does `. ./agent_lib.sh`. It only defines functions.
#
# Provides: prop, service_name, is_root (the service name, which is the
# launchd label); plist_file, launchd_domain, launchd_stop, launchd_remove
# (the launchd job of install.sh); read_pid, pid_is (pid files checked
# against the running binary, W3).
# The functions that name the job use $service (devops_agent_<id>), which
# the sourcing script sets first.

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

# plist_file: LaunchDaemon for root, LaunchAgent for a user.
plist_file() {
	if is_root; then
		echo "${DEVOPS_LAUNCHD_DAEMON_DIR:-/Library/LaunchDaemons}/$service.plist"
	else
		echo "$HOME/Library/LaunchAgents/$service.plist"
	fi
}

# launchd_domain: system for root; the GUI session when there is one, else
# the user's background domain (ssh logins).
launchd_domain() {
	if is_root; then
		echo system
	elif launchctl print "gui/$(id -u)" >/dev/null 2>&1; then
		echo "gui/$(id -u)"
	else
		echo "user/$(id -u)"
	fi
}

# launchd_stop PLIST: boot the job out of whichever domain has it loaded.
launchd_stop() {
	if is_root; then
		launchctl bootout "system/$service" 2>/dev/null && return 0
	else
		launchctl bootout "gui/$(id -u)/$service" 2>/dev/null && return 0
		launchctl bootout "user/$(id -u)/$service" 2>/dev/null && return 0
	fi
	launchctl unload "$1" 2>/dev/null
	return 0
}

# launchd_remove: boot out and delete the plist of this agent, if any.
launchd_remove() {
	plist=$(plist_file)
	[ -f "$plist" ] || return 0
	launchd_stop "$plist"
	rm -f "$plist"
	echo "removed $plist"
}

# read_pid NAME: the pid in runtime/NAME.pid when it is a number.
read_pid() {
	p=$(cat "runtime/$1.pid" 2>/dev/null) || return 1
	case $p in
	'' | *[!0-9]*) return 1 ;;
	esac
	echo "$p"
}

# pid_is PID BINARY: true when PID is alive and runs BINARY (W3). macOS has
# no /proc: `ps -o comm=` prints the full executable path there.
pid_is() {
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) ||
		exe=$(ps -p "$1" -o comm= 2>/dev/null) || return 1
	[ "$exe" = "$2" ] || [ "$exe" = "$2 (deleted)" ]
}
