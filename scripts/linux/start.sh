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
# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
. ./agent_lib.sh

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
