#!/usr/bin/env bash
# make bench: runs every benchmark that the built tree supports, prints a
# table and writes bench/results/latest.json. See bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
