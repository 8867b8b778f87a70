#!/bin/sh
# shim_lib.sh - shared by the PATH shims of the script tests (sourced).
#
# The shims (systemctl, launchctl, loginctl) record every call as
# one line in $SHIM_LOG and keep their state in $SHIM_STATE, so a test can
# check what the scripts asked the service manager to do. systemctl and
# launchctl also emulate starting and stopping a job, so the processes a
# script starts through them really run.

# shim_record NAME ARGS...: append "NAME ARGS" to the call log.
shim_record() {
	echo "$*" >>"${SHIM_LOG:?SHIM_LOG not set}"
}

# shim_start DIR EXE: start EXE detached, in DIR, as a service manager would.
shim_start() {
	(cd "$1" && nohup "$2" >/dev/null 2>&1 &)
}

# shim_stop DIR: SIGTERM the daemon of install dir DIR and wait (like systemd
# with KillMode=process, or launchd's bootout: the daemon only).
shim_stop() {
	pid=$(cat "$1/runtime/daemon.pid" 2>/dev/null) || return 0
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$1/devopsDaemon" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	n=50
	while [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$1/devopsDaemon" ] && [ $n -gt 0 ]; do
		n=$((n - 1))
		sleep 0.1
	done
}
