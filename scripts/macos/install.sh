#!/bin/sh
# install.sh - install the BK-CI agent in this directory, register it with
# launchd and start it at once (GoAgent waited for the next login).
#
#  1. When neither agent.zip nor devopsDaemon is here, download agent.zip
#     from the server (the server fills in ##agent_url## and ##projectId##)
#     and unzip it; unzip jre.zip into jdk/ when jdk/ is missing.
#  2. Remove an older plist of this agent and stop it (stop.sh).
#  3. Write the plist: a LaunchDaemon (/Library/LaunchDaemons) as root, a
#     LaunchAgent (~/Library/LaunchAgents) for a user, and load it with
#     launchctl; RunAtLoad starts the daemon right away.
#  4. Make sure it runs (start.sh).
# The label is devops_agent_<devops.agent.id of .agent.properties>.
# Works from any cwd, and through `curl ... | sh` in the install dir.
# Needs agent_lib.sh (shared helpers, in agent.zip) next to it once unzipped.
set -u

project_id='##projectId##'
agent_url='##agent_url##'

# xml STRING: STRING escaped for XML text.
xml() {
	printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'
}

# plist_text: the launchd job. KeepAlive restarts the daemon only after a
# crash (a signal), not after exit 0 (stopped) or 88 (agent deleted on the
# server). AbandonProcessGroup: launchd must not kill what the daemon started
# when the daemon ends. PATH is the installing shell's, for the builds.
plist_text() {
	cat <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- $service: BK-CI build agent. Written by install.sh, removed by uninstall.sh. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>$service</string>
	<key>ProgramArguments</key>
	<array>
		<string>$(xml "$workdir")/devopsDaemon</string>
	</array>
	<key>WorkingDirectory</key>
	<string>$(xml "$workdir")</string>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>Crashed</key>
		<true/>
	</dict>
	<key>AbandonProcessGroup</key>
	<true/>
	<key>ProcessType</key>
	<string>Standard</string>
	<key>EnvironmentVariables</key>
	<dict>
		<key>PATH</key>
		<string>$(xml "$PATH")</string>
	</dict>
	<key>StandardOutPath</key>
	<string>/dev/null</string>
	<key>StandardErrorPath</key>
	<string>/dev/null</string>
</dict>
</plist>
PLIST
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
	if curl -fsSL -H "X-DEVOPS-PROJECT-ID: $project_id" -o agent.zip.part "$agent_url"; then
		mv agent.zip.part agent.zip
		return 0
	fi
	rm -f agent.zip.part
	echo "install.sh: cannot download agent.zip" >&2
	exit 1
}

# launchd_add: write the plist and load it now.
launchd_add() {
	plist=$(plist_file)
	mkdir -p "$(dirname -- "$plist")" || return 1
	plist_text >"$plist.tmp" && mv "$plist.tmp" "$plist" || return 1
	chmod 644 "$plist"
	domain=$(launchd_domain)
	launchctl bootstrap "$domain" "$plist" 2>/dev/null || launchctl load -w "$plist" || return 1
	echo "autostart: launchd job $service ($plist, domain $domain)"
}

main() {
	cd "$(dirname -- "$0")" || exit 1
	workdir=$(pwd -P)
	exec </dev/null
	echo "install dir: $workdir, user: $(id -un)"

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
	[ -x jdk/Contents/Home/bin/java ] && jdk/Contents/Home/bin/java -version

	service=$(service_name)
	if [ -z "$service" ]; then
		echo "install.sh: no usable devops.agent.id in .agent.properties" >&2
		exit 1
	fi
	chmod +x devopsDaemon devopsAgent ./*.sh

	launchd_remove
	./stop.sh
	launchd_add || echo "install.sh: warning: the launchd job could not be loaded" >&2
	./start.sh
}

# Everything is in main so the shell has read the whole script before
# unzip may overwrite it.
main "$@"
exit $?
