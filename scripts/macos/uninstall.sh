#!/bin/sh
# uninstall.sh - boot out and delete the agent's launchd plist, then stop the
# daemon and the agent (stop.sh). It deletes nothing else.
set -u

cd "$(dirname -- "$0")" || exit 1

# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
. ./agent_lib.sh

service=$(service_name)
if [ -n "$service" ]; then
	launchd_remove
else
	echo "uninstall.sh: no usable devops.agent.id in .agent.properties:" \
		"no launchd job to remove" >&2
fi

sh ./stop.sh
