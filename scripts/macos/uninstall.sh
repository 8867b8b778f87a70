#!/bin/sh
# uninstall.sh - boot out and delete the agent's launchd plist, then stop the
# daemon and the agent (stop.sh). It deletes nothing else.
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

# plist_file: LaunchDaemon for root, LaunchAgent for a user.
plist_file() {
	if is_root; then
		echo "${DEVOPS_LAUNCHD_DAEMON_DIR:-/Library/LaunchDaemons}/$service.plist"
	else
		echo "$HOME/Library/LaunchAgents/$service.plist"
	fi
}

id=$(prop devops.agent.id)
case $id in
'' | *[!A-Za-z0-9_.-]*)
	echo "uninstall.sh: no usable devops.agent.id in .agent.properties:" \
		"no launchd job to remove" >&2
	;;
*)
	service="devops_agent_$id"
	plist=$(plist_file)
	if [ -f "$plist" ]; then
		if is_root; then
			launchctl bootout "system/$service" 2>/dev/null || launchctl unload "$plist" 2>/dev/null
		else
			launchctl bootout "gui/$(id -u)/$service" 2>/dev/null ||
				launchctl bootout "user/$(id -u)/$service" 2>/dev/null ||
				launchctl unload "$plist" 2>/dev/null
		fi
		rm -f "$plist"
		echo "removed $plist"
	fi
	;;
esac

sh ./stop.sh
