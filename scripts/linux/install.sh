#!/bin/sh
# install.sh - install the BK-CI agent in this directory and register it to
# start at boot, then start it.
#
#  1. When neither agent.zip nor devopsDaemon is here, download agent.zip
#     from the server (the server fills in ##agent_url## and ##projectId##)
#     and unzip it; unzip jre.zip into jdk/ when jdk/ is missing.
#  2. Remove an older autostart entry of this agent and stop it (stop.sh).
#  3. Register autostart, the first that applies:
#       systemd (PID 1 is systemd): a system unit as root, else a user unit
#         plus `loginctl enable-linger` so it starts at boot without a login;
#       rc.local (root, an executable rc.local exists);
#       cron @reboot (crontab exists);
#     DEVOPS_AUTOSTART=systemd|rc.local|cron|none forces a choice.
#  4. Start it (start.sh).
# The service name is devops_agent_<devops.agent.id of .agent.properties>.
# Works from any cwd, and through `curl ... | sh` in the install dir.
# Needs agent_lib.sh (shared helpers, in agent.zip) next to it once unzipped.
set -u

project_id='##projectId##'
agent_url='##agent_url##'

# sh_quote STRING: STRING as one single-quoted shell word.
sh_quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# download: fetch agent.zip from the server.
download() {
	case $agent_url in
	'##'*)
		echo "install.sh: agent.zip is missing and this copy of install.sh has no" \
			"download URL (the server fills it in)" >&2
		exit 1
		;;
	esac
	echo "downloading agent.zip"
	if command -v curl >/dev/null 2>&1 &&
		curl -fsSL -H "X-DEVOPS-PROJECT-ID: $project_id" -o agent.zip.part "$agent_url"; then
		mv agent.zip.part agent.zip
		return 0
	fi
	if command -v wget >/dev/null 2>&1 &&
		wget -q --header="X-DEVOPS-PROJECT-ID: $project_id" -O agent.zip.part "$agent_url"; then
		mv agent.zip.part agent.zip
		return 0
	fi
	rm -f agent.zip.part
	echo "install.sh: cannot download agent.zip (need curl or wget)" >&2
	exit 1
}

# autostart_mode: systemd, rc.local, cron or none.
autostart_mode() {
	case ${DEVOPS_AUTOSTART:-auto} in
	systemd | rc.local | cron | none) echo "$DEVOPS_AUTOSTART" ;;
	auto)
		if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
			echo systemd
		elif is_root && [ -x "$(rc_local)" ]; then
			echo rc.local
		elif command -v crontab >/dev/null 2>&1; then
			echo cron
		else
			echo none
		fi
		;;
	*)
		echo "install.sh: bad DEVOPS_AUTOSTART=$DEVOPS_AUTOSTART" >&2
		exit 1
		;;
	esac
}

# unit_text: the systemd unit. KillMode=process: stopping or restarting the
# daemon never kills the agent or its builds. Exit 88 (agent deleted on the
# server) is final; other failures restart the daemon after 5 s.
# Delegate=yes: the agent gives every build a cgroup of its own below the
# unit's, so that it can end a build's whole process tree (docs/durability.md).
unit_text() {
	# systemd expands %-specifiers: a literal % is written %%.
	dir=$(printf '%s' "$workdir" | sed 's/%/%%/g')
	echo "# $service: BK-CI build agent. Written by install.sh, removed by uninstall.sh."
	echo "[Unit]"
	echo "Description=BK-CI build agent $service (devopsDaemon)"
	if is_root; then
		echo "After=network-online.target"
		echo "Wants=network-online.target"
	fi
	echo ""
	echo "[Service]"
	echo "Type=simple"
	echo "WorkingDirectory=$dir"
	echo "ExecStart=\"$dir/devopsDaemon\""
	echo "KillMode=process"
	echo "Delegate=yes"
	echo "Restart=on-failure"
	echo "RestartSec=5"
	echo "RestartPreventExitStatus=88"
	echo ""
	echo "[Install]"
	if is_root; then
		echo "WantedBy=multi-user.target"
	else
		echo "WantedBy=default.target"
	fi
}

# systemd_add: write and enable the unit (started later by start.sh).
systemd_add() {
	if ! is_root; then
		if ! systemctl --user show-environment >/dev/null 2>&1; then
			echo "install.sh: no systemd user manager for $(id -un) (log in" \
				"directly, not through su)" >&2
			return 1
		fi
		loginctl enable-linger "$(id -un)" ||
			echo "install.sh: warning: loginctl enable-linger failed: the agent" \
				"will only start while $(id -un) is logged in" >&2
	fi
	unit=$(unit_file)
	mkdir -p "$(dirname -- "$unit")" || return 1
	unit_text >"$unit.tmp" && mv "$unit.tmp" "$unit" || return 1
	sctl daemon-reload && sctl enable "$service" || return 1
	echo "autostart: systemd unit $unit"
}

# rclocal_add: a line in rc.local, before its final "exit 0" when it has one.
rclocal_add() {
	rc=$(rc_local)
	if has_marked "$rc"; then
		echo "autostart: $rc already starts $service"
		return 0
	fi
	line="cd $(sh_quote "$workdir") && ./devopsDaemon >/dev/null 2>&1 & # $service"
	awk -v l="$line" '
		{ lines[NR] = $0 }
		END {
			last = 0
			for (i = NR; i >= 1; i--) if (lines[i] ~ /^[ \t]*exit 0[ \t]*$/) { last = i; break }
			for (i = 1; i <= NR; i++) { if (i == last) print l; print lines[i] }
			if (last == 0) print l
		}' "$rc" >"$rc.devops.tmp" &&
		cat "$rc.devops.tmp" >"$rc" && rm -f "$rc.devops.tmp" || return 1
	echo "autostart: $rc"
}

# cron_add: an @reboot line in the user's crontab.
cron_add() {
	tab=$(crontab -l 2>/dev/null) || tab=""
	if printf '%s\n' "$tab" | marked; then
		echo "autostart: crontab already starts $service"
		return 0
	fi
	line="@reboot cd $(sh_quote "$workdir") && ./devopsDaemon >/dev/null 2>&1 # $service"
	{
		[ -n "$tab" ] && printf '%s\n' "$tab"
		printf '%s\n' "$line"
	} | crontab - || return 1
	echo "autostart: crontab @reboot"
}

main() {
	cd "$(dirname -- "$0")" || exit 1
	workdir=$(pwd -P)
	exec </dev/null
	echo "install dir: $workdir, user: $(id -un)"
	case $workdir in
	*'"'* | *\\*)
		echo "install.sh: the install path must not contain \" or \\" >&2
		exit 1
		;;
	esac

	if [ ! -f agent.zip ] && [ ! -f devopsDaemon ]; then
		download
		unzip -q -o agent.zip || exit 1
	fi
	# The helpers shared with the other scripts come with agent.zip, so they
	# are read only now (this script may have been piped to sh before).
	if [ ! -f agent_lib.sh ]; then
		echo "install.sh: agent_lib.sh is missing (it comes in agent.zip)" >&2
		exit 1
	fi
	# shellcheck source-path=SCRIPTDIR source=agent_lib.sh
	. ./agent_lib.sh
	if [ ! -d jdk ] && [ -f jre.zip ]; then
		unzip -q -o jre.zip -d jdk || echo "install.sh: warning: cannot unzip jre.zip" >&2
	fi
	echo "OS: $(uname -s), arch: $(uname -m)"
	[ -x jdk/bin/java ] && jdk/bin/java -version

	service=$(service_name)
	if [ -z "$service" ]; then
		echo "install.sh: no usable devops.agent.id in .agent.properties" >&2
		exit 1
	fi
	chmod +x devopsDaemon devopsAgent ./*.sh

	autostart_remove
	./stop.sh

	mode=$(autostart_mode) || exit 1
	case $mode in
	systemd) systemd_add || cron_add ;;
	rc.local) rclocal_add ;;
	cron) cron_add ;;
	none) echo "autostart: none (run ./start.sh after each boot)" ;;
	esac || echo "install.sh: warning: autostart ($mode) could not be set up" >&2

	./start.sh
}

# Everything is in main so the shell has read the whole script before
# unzip may overwrite it.
main "$@"
exit $?
