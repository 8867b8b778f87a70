#!/bin/sh
# stop.sh - stop the daemon and the agent; build processes go on:
# `devopsAgent stop` (docs/scripts.md).
cd "$(dirname -- "$0")" || exit 1
exec ./devopsAgent stop
