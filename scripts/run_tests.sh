#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): the whole suite against ROS 2 Kilted (.venv),
# then the ROS tests against ROS 2 Jazzy (.venv-jazzy, made by `DIFFPOSE_DISTRO=jazzy
# scripts/setup.sh`). A failure in either fails the command. Extra arguments go to pytest, in
# both runs (a selection that matches no Jazzy test, e.g. `-k tracking`, skips the Jazzy run
# with a note; without arguments, an empty run is a failure).
#
# Environment: DIFFPOSE_TEST_DISTROS ("kilted jazzy" by default; "kilted" for a quick local run).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
distros="${DIFFPOSE_TEST_DISTROS:-kilted jazzy}"

# The Jazzy run repeats what depends on the ROS distribution: every test that loads rclpy or the
# messages built against it, starts node processes, plays or records through rclpy, or checks
# what the CMake build installed into the venv. The rest (estimator core, model, training,
# evaluation, benchmarks' report code) never imports rclpy and runs once, on Kilted.
jazzy_tests=(
  test/test_ros_params_and_launch.py  # descriptors on rclpy nodes, YAML through rcl, DDS profile
  test/test_node.py                   # the node in its own process: lifecycle, QoS, params
  test/test_node_depth.py             # depth + CameraInfo publishers -> poses_3d, 3D markers
  test/test_marker_render.py          # the 3D marker picture from visualization_msgs
  test/test_stress.py                 # bad input, publisher kill, SIGINT, weight faults
  test/test_bags.py                   # play/record through rclpy; messages of the install
  test/test_bag_evaluate.py::test_recorded_live_run_gives_the_offline_metrics  # play+node+record
  test/test_executables.py            # the executables CMake installed into .venv-jazzy
  test/test_colcon_build.py           # colcon builds the package against Jazzy, as on a robot
)

# The ROS wheels' bootstrap (.pth) re-executes Python with its venv's LD_LIBRARY_PATH once per
# process tree; a tree that already ran one venv's Python must not carry that into the other.
if [ -n "${_ROS_WHEELS_BOOTSTRAP_COMPLETE:-}" ]; then
  unset _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH
fi

# run_pytest NAME PYTHON ARGS...: pytest's exit code, 5 (no test collected) counted as failure
run_pytest() {
  local name="$1" python="$2"
  shift 2
  if [ ! -x "$python" ]; then
    echo "run_tests: $python is missing; run scripts/setup.sh (make test does)" >&2
    return 1
  fi
  echo "run_tests: ROS 2 $name ($("$python" -c \
    'import importlib.metadata as m; print("rclpy", m.version("ros-rclpy"))' 2>/dev/null))"
  local start=$SECONDS
  "$python" -m pytest "$@"
  local code=$?
  echo "run_tests: ROS 2 $name finished with exit code $code in $((SECONDS - start)) s"
  if [ "$code" = 5 ]; then
    if [ "$name" = Jazzy ] && [ "$extra_arguments" -gt 0 ]; then
      echo "run_tests: no Jazzy test matches the arguments; Jazzy run skipped" >&2
      return 0
    fi
    echo "run_tests: pytest collected no tests ($name); that is a failure here" >&2
    return 1
  fi
  return "$code"
}

extra_arguments=$#
status=0
for distro in $distros; do
  case "$distro" in
    kilted) run_pytest Kilted .venv/bin/python "$@" || status=1 ;;
    jazzy) run_pytest Jazzy .venv-jazzy/bin/python "${jazzy_tests[@]}" "$@" || status=1 ;;
    *) echo "run_tests: unknown distribution '$distro' (kilted, jazzy)" >&2; status=1 ;;
  esac
done
exit "$status"
