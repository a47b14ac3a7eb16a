#!/usr/bin/env bash
# One-command setup: venv, pinned dependencies, CMake build of the package into the venv, and the
# third-party assets (sha256-checked) in .cache/assets. Idempotent: a second run takes seconds.
#
#   scripts/setup.sh            # development: symlink install (edits to diffpose_ros/ are live)
#   CI=true scripts/setup.sh    # CI: plain copy install
#   DIFFPOSE_DISTRO=jazzy scripts/setup.sh   # the second venv .venv-jazzy: ROS 2 Jazzy wheels,
#                               # same other dependencies, messages built the same way (`make test`
#                               # runs the ROS tests against it too; see scripts/run_tests.sh)
#
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
#              DIFFPOSE_DISTRO (kilted, the default, or jazzy),
#              DIFFPOSE_SKIP_ASSETS=1 to skip the asset fetch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
distro="${DIFFPOSE_DISTRO:-kilted}"
case "$distro" in
  kilted) venv="$root/.venv"; ros_requirements=requirements/ros.txt; build="$root/build/diffpose_ros"
          logs="$root/build/cmake"; tag='' ;;
  jazzy) venv="$root/.venv-jazzy"; ros_requirements=requirements/ros_jazzy.txt
         build="$root/build/diffpose_ros-jazzy"; logs="$root/build/cmake-jazzy"; tag=' jazzy' ;;
  *) echo "[setup] DIFFPOSE_DISTRO must be kilted or jazzy, not '$distro'" >&2; exit 2 ;;
esac
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
arch="$(uname -m)"
log() { printf '[setup%s] %s\n' "$tag" "$*"; }

# --- 1. virtualenv ------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  if [ "$arch" = "aarch64" ]; then
    # Jetson: see the system's (JetPack) torch instead of replacing it.
    log "creating $venv (aarch64: with system site-packages, to use the JetPack torch)"
    "$py" -m venv --system-site-packages "$venv"
  else
    log "creating $venv"
    "$py" -m venv "$venv"
  fi
fi
vpy="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# --- 2. Python dependencies (skipped when nothing they depend on changed) -----------------
stamp="$venv/.diffpose-deps.sha256"
want="$(cat requirements/*.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$arch"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  torch_args=()
  if [ "$arch" = "x86_64" ]; then
    # The versions that lie on this disk (see the env notes); ultralytics needs torchvision.
    torch_args=(torch==2.14.1 torchvision==0.29.1)
  elif "$vpy" -c 'import torch, torchvision' 2>/dev/null; then
    log "aarch64: keeping the installed torch $("$vpy" -c 'import torch; print(torch.__version__)')"
  else
    log "aarch64 without torch: installing the CPU build (install NVIDIA's JetPack torch for the GPU)"
    torch_args=(torch==2.9.1 torchvision==0.24.1)
  fi
  log "installing Python dependencies (first run: several minutes)"
  # (the filter drops pip's noise about this machine's local find-links folders)
  quiet() { grep -v 'is ignored: it is neither' || true; }
  if ! { "$vpy" -m pip install -q --upgrade "pip>=24" wheel 2>&1 | quiet; } \
     || ! { "$vpy" -m pip install -q "${torch_args[@]}" \
              -r "$ros_requirements" -r requirements/base.txt -r requirements/test.txt 2>&1 | quiet; }; then
    log "pip install failed (see above); PyPI must be reachable. Re-run scripts/setup.sh when it is."
    exit 1
  fi
  echo "$want" > "$stamp"
else
  log "Python dependencies up to date"
fi

# --- 3. build and install the ROS package (messages + Python package) into the venv ---------
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
symlink=ON
[ "${CI:-}" = "true" ] && symlink=OFF
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
mkdir -p "$root/build"
if [ ! -f "$build/CMakeCache.txt" ] || ! grep -q "AMENT_CMAKE_SYMLINK_INSTALL:BOOL=$symlink" "$build/CMakeCache.txt"; then
  rm -rf "$build"
  log "configuring CMake build (symlink install: $symlink)"
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$vpy" -DAMENT_CMAKE_SYMLINK_INSTALL=$symlink > "$logs-configure.log" 2>&1 \
    || { tail -30 "$logs-configure.log"; log "CMake configure failed (log: ${logs#"$root/"}-configure.log)"; exit 1; }
fi
log "building messages and installing diffpose_ros into the venv"
cmake --build "$build" -j2 > "$logs-build.log" 2>&1 \
  || { tail -30 "$logs-build.log"; log "CMake build failed (log: ${logs#"$root/"}-build.log)"; exit 1; }
cmake --install "$build" > "$logs-install.log" 2>&1 \
  || { tail -30 "$logs-install.log"; log "CMake install failed"; exit 1; }

# --- 4. third-party assets (git-ignored cache, sha256-checked) ----------------------------
if [ "${DIFFPOSE_SKIP_ASSETS:-0}" != "1" ]; then
  "$vpy" "$root/scripts/fetch_assets.py"
  # unpickle the verified YOLO checkpoint once; everything later loads safetensors
  (cd "$root" && "$vpy" -m diffpose_ros.model.backbone)
fi
log "done. Activate with: source ${venv#"$root/"}/bin/activate"
