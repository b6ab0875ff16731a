#!/usr/bin/env bash
# The README's demo command: sets up .venv (once) and runs the whole story on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/radioactive demo "$@"
