#!/bin/sh
# install.sh [mode] - register the agent of this directory with the service
# manager and start it: `devopsAgent install [mode]` (docs/scripts.md).
cd "$(dirname -- "$0")" || exit 1
exec ./devopsAgent install "$@"
