#!/bin/sh
# uninstall.sh - remove the service registration and stop the agent:
# `devopsAgent uninstall` (docs/scripts.md).
cd "$(dirname -- "$0")" || exit 1
exec ./devopsAgent uninstall
