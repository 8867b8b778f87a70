#!/bin/sh
# start.sh [debug] - start devopsDaemon, which starts and watches devopsAgent.
#
# Idempotent: when this install's daemon already runs, it says so and exits 0.
# When install.sh wrote a launchd plist, the daemon is started through
# launchctl (kickstart, or bootstrap when the job is not loaded) so launchd
# owns it; otherwise (or with "debug") it is started directly with nohup.
# Works from any cwd: it uses its own directory.
set -u

cd "$(dirname -- "$0")" || exit 1
workdir=$(pwd -P)
# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
. ./agent_lib.sh

# launchd_start PLIST: start the job, loading it when it is not loaded.
launchd_start() {
	domain=$(launchd_domain)
	if launchctl print "$domain/$service" >/dev/null 2>&1; then
		launchctl kickstart "$domain/$service"
	else
		launchctl bootstrap "$domain" "$1" 2>/dev/null || launchctl load -w "$1"
	fi
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
for d in workspace logs; do
	[ -d "$d" ] || { mkdir -p "$d" && chmod 777 "$d"; }
done

if pid=$(daemon_pid); then
	echo "devopsDaemon is already running (pid $pid)"
	exit 0
fi
chmod +x devopsDaemon devopsAgent 2>/dev/null

if [ "${1:-}" != debug ] && [ -n "$service" ] && [ -f "$(plist_file)" ]; then
	if launchd_start "$(plist_file)" && pid=$(wait_daemon 10); then
		echo "devopsDaemon started (pid $pid, launchd job $service)"
		exit 0
	fi
	echo "start.sh: launchd did not start $service; starting directly" >&2
fi
nohup "$workdir/devopsDaemon" ${1:+"$1"} >/dev/null 2>&1 &
if pid=$(wait_daemon 10); then
	echo "devopsDaemon started (pid $pid, nohup)"
	exit 0
fi
echo "start.sh: devopsDaemon did not start; see $workdir/logs/devopsDaemon.log" >&2
exit 1
