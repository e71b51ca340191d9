#!/usr/bin/env bash
# The main job, end to end. Grows with the project; see issue "The main job".
set -euo pipefail
echo "demo: nothing to show yet" >&2
exit 1
