#!/bin/sh
# start.sh - start the agent (through its service when installed as one):
# `devopsAgent start` (docs/scripts.md).
cd "$(dirname -- "$0")" || exit 1
exec ./devopsAgent start
