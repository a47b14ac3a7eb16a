#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run). Extra arguments go to pytest.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
.venv/bin/python -m pytest "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$code"
