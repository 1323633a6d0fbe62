#!/usr/bin/env bash
# The Python 3.12 wheels the GPU machine lacks, into DIR (default .whl): see bench/gpu_wheels.py.
#   bash bench/gpu_wheels.sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu_wheels.py "${1:-.whl}"
