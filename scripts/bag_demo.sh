#!/usr/bin/env bash
# Replay a bag into diffpose_node on sim time and record its outputs, then summarise: the flow
# of launch/diffpose_bag.launch.py, run here with `diffpose-bag play` / `diffpose-bag record`
# instead of `ros2 bag` (no rosbag2 and no `ros2 launch` on this machine). `make bag-demo`.
#
#   scripts/bag_demo.sh                      # the sample bag (made first if missing), rate 1
#   scripts/bag_demo.sh --frames 40          # a 40-frame bag from vtest.avi (4 s)
#   scripts/bag_demo.sh --bag BAG --rate 0.5 --out outputs/bag_demo/mine
#
# Three processes on a private ROS domain (localhost only, the shared-memory Fast DDS profile):
#   1. diffpose-bag record  the node's outputs (/diffpose/camera/poses, .../markers, /diagnostics)
#   2. diffpose_node        autostart, use_sim_time, transport from the bag, detector_imgsz 1280
#                           (vtest.avi's people are small)
#   3. diffpose-bag play    --clock, starts once the node subscribes (after loading its models)
# Writes OUT/outputs (the recorded bag) and OUT/{record,node,play}.log; prints a summary.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"

bag="" out="" rate="1.0" frames="" imgsz="1280" linger="5" wait_timeout="300"
while [ $# -gt 0 ]; do
  case "$1" in
    --bag) bag="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --frames) frames="$2"; shift 2 ;;
    --detector-imgsz) imgsz="$2"; shift 2 ;;
    --linger) linger="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bag_demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$bag" ] && [ -n "$frames" ]; then
  echo "bag_demo: give --bag or --frames, not both" >&2; exit 2
fi

log() { echo "[bag_demo] $*"; }

# --- isolation: a private domain, loopback only, big shared-memory segments, logs in a temp dir
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((20 + $$ % 80))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$root/config/fastdds_shm.xml}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1

# --- 1. the bag
if [ -n "$frames" ]; then
  bag="outputs/bags/vtest_0_$frames"
  vtest="$("$py" -c 'from diffpose_ros.assets import VTEST_VIDEO, asset_path; print(asset_path(VTEST_VIDEO))')"
  [ -d "$bag" ] || "$py" -m diffpose_ros.cli.bag make "$vtest:0:$frames" --compressed --out "$bag" -q
elif [ -z "$bag" ]; then
  "$py" -m diffpose_ros.cli.bag make -q          # the sample bag (kept if it exists)
  bag="$("$py" -c 'from diffpose_ros.bags.make import sample_bag_path; print(sample_bag_path())')"
fi
read -r image_topic transport frame_count < <("$py" - "$bag" <<'EOF'
import sys
from diffpose_ros.bags.io import bag_info
topics = bag_info(sys.argv[1])['topics']
if '/camera/image_raw/compressed' in topics and '/camera/image_raw' not in topics:
    print('/camera/image_raw/compressed compressed', topics['/camera/image_raw/compressed']['count'])
elif '/camera/image_raw' in topics:
    print('/camera/image_raw raw', topics['/camera/image_raw']['count'])
else:
    sys.exit(f'bag_demo: {sys.argv[1]} has no /camera/image_raw[/compressed] topic')
EOF
)
[ -n "${transport:-}" ] || { echo "bag_demo: cannot read $bag" >&2; exit 1; }

out="${out:-outputs/bag_demo/$(date +%Y%m%d_%H%M%S)}"
if [ -e "$out/outputs" ]; then echo "bag_demo: $out/outputs exists" >&2; exit 1; fi
mkdir -p "$out"
log "bag $bag: $frame_count frames on $image_topic; rate $rate; domain $ROS_DOMAIN_ID; out $out"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- 2. recorder, then the node
"$py" -m diffpose_ros.cli.bag record --out "$out/outputs" \
  --topics /diffpose/camera/poses /diffpose/camera/markers /diagnostics > "$out/record.log" 2>&1 &
record_pid=$!; pids+=("$record_pid")
"$py" -m diffpose_ros.ros.node --ros-args -p autostart:=true -p use_sim_time:=true \
  -p transport:="$transport" -p detector_imgsz:="$imgsz" > "$out/node.log" 2>&1 &
node_pid=$!; pids+=("$node_pid")
log "recorder pid $record_pid, node pid $node_pid; waiting for the node to subscribe (model loading)"

# --- 3. play once the node listens
started=$(date +%s)
if ! "$py" -m diffpose_ros.cli.bag play "$bag" --clock --rate "$rate" \
     --wait-for "$image_topic" --wait-timeout "$wait_timeout" > "$out/play.log" 2>&1; then
  log "playback failed:"; tail -5 "$out/play.log"; log "node log:"; tail -20 "$out/node.log"
  exit 1
fi
log "$(tail -1 "$out/play.log")"
sleep "$linger"                                    # the node finishes its last frames

# --- 4. stop (SIGINT: the recorder closes its bag) and summarise
kill -INT "$node_pid" "$record_pid" 2>/dev/null || true
wait "$record_pid" || { log "recorder failed:"; tail -5 "$out/record.log"; exit 1; }
wait "$node_pid" || true
pids=()
log "finished in $(( $(date +%s) - started )) s"
"$py" - "$out/outputs" "$frame_count" <<'EOF'
import sys
from diffpose_ros.bags.io import bag_info, bag_typestore, format_info, iter_messages, open_bag

path, frames = sys.argv[1], int(sys.argv[2])
print(format_info(bag_info(path)))
poses, persons, diag = 0, 0, None
with open_bag(path) as reader:
    store = bag_typestore(reader)
    for conn, _t, raw in iter_messages(reader, reader.connections):
        if conn.topic.endswith('/poses'):
            poses += 1
            persons += len(store.deserialize_cdr(raw, conn.msgtype).persons)
        elif conn.topic == '/diagnostics':
            diag = store.deserialize_cdr(raw, conn.msgtype)
print(f'summary: {frames} frames played, {poses} pose arrays recorded '
      f'({100 * poses / max(frames, 1):.0f} %), {persons / max(poses, 1):.1f} persons per frame')
if diag is not None:
    for status in diag.status:
        if status.name.startswith('diffpose: camera'):
            values = {kv.key: kv.value for kv in status.values}
            keys = ('frames_received', 'frames_published', 'frames_dropped',
                    'frames_lost_in_transport', 'bad_input_total', 'stamps_comparable',
                    'latency_p50_ms', 'latency_p95_ms', 'processing_latency_p50_ms',
                    'service_p50_ms')
            print('last diagnostics: ' + ', '.join(f'{k} {values.get(k, "?")}' for k in keys))
EOF
