#!/bin/sh
# uninstall.sh - remove the agent's autostart entry (systemd unit, rc.local
# line or crontab line) and stop the daemon and the agent (stop.sh).
# It deletes nothing else: the install dir, its logs and workspace stay.
# Linger (loginctl enable-linger) is left on: other services may need it.
set -u

cd "$(dirname -- "$0")" || exit 1

# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
. ./agent_lib.sh

service=$(service_name)
if [ -n "$service" ]; then
	autostart_remove
else
	echo "uninstall.sh: no usable devops.agent.id in .agent.properties:" \
		"no autostart entry to remove" >&2
fi

sh ./stop.sh
