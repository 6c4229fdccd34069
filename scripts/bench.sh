#!/usr/bin/env bash
# scripts/bench.sh: Finch side by side with gst-rtsp-server and a no-logic baseline, in ONE run.
#
#   scripts/bench.sh                  the full table (about 15 minutes), written to docs/benchmarks.md
#   BENCH_READERS="10 100" BENCH_SECS=5 BENCH_OUT=/tmp/b.md scripts/bench.sh     a quick look
#
# Every server gets the same live clip (../shared/bench: 1280x720 H.264 + AAC, ~2 Mbit/s, a
# keyframe every 2 s) and the same load client, `finch-load`:
#   finch-push  Finch fed by an ffmpeg publisher (ANNOUNCE/RECORD over TCP)
#   finch-pull  Finch pulling the stand-in camera (rtsp://127.0.0.1:8600/up) as a `source` path
#   gst         gst-rtsp-server relaying the same camera (shared factory), ../shared/bench/peers.sh
#   baseline    `finch-load baseline`: the recorded stream written to every TCP reader, one write
#               per frame, no RTSP logic; what any server has to pay at least
# Servers run on core 0, the load client on core 1 (the camera's feed shares core 1). Each row is
# one `finch-load` run; the server's CPU is that of its whole process tree. Absolute figures drift
# between runs on a shared machine; the ratios within one run are what to compare.
#
# Knobs (not FINCH_*: those are Finch's own config overrides):
#   BENCH_READERS (default "10 100 300 1000 3000"), BENCH_FINCH_MORE (extra N for Finch over TCP,
#   default "6000"), BENCH_SECS (per run, default 15), BENCH_OUT (default docs/benchmarks.md),
#   BENCH_STATE (scratch, default $TMPDIR/finch-bench), PEERS (default ../shared/bench).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-$ROOT/../shared/bench}"
READERS="${BENCH_READERS:-10 100 300 1000 3000}"
MORE="${BENCH_FINCH_MORE-6000}"
SECS="${BENCH_SECS:-15}"
OUT="${BENCH_OUT:-$ROOT/docs/benchmarks.md}"
STATE="${BENCH_STATE:-${TMPDIR:-/tmp}/finch-bench}"
export STATE_PEERS="$STATE/peers"
SERVER_CPU=0
CLIENT_CPU=1
RTSP_PORT=18554
ADMIN_PORT=18080
PULL_PORT=18654
PULL_ADMIN_PORT=18180
BASE_PORT=18590
GST_URL="rtsp://127.0.0.1:8555/live/acc"
CAMERA_URL="rtsp://127.0.0.1:8600/up"

[[ -x "$PEERS/peers.sh" || -f "$PEERS/peers.sh" ]] || { echo "bench: no peers scripts at $PEERS (set PEERS=)" >&2; exit 2; }
(( $(nproc) >= 2 )) || { echo "bench: needs 2 cores (server on one, client on the other)" >&2; exit 2; }
mkdir -p "$STATE" "$(dirname "$OUT")"
RESULTS="$STATE/results.jsonl"
: >"$RESULTS"
peers() { STATE="$STATE_PEERS" bash "$PEERS/peers.sh" "$@"; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  peers stop all >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Thousands of readers: as many descriptors as allowed, on both sides.
ulimit -n "$(ulimit -Hn)"

echo "bench: installing peers and building (release)"
if [[ $(id -u) == 0 ]]; then peers install >/dev/null; fi
(cd "$ROOT" && cargo build --release -q -p finch -p finch-load)
FINCH="$ROOT/target/release/finch"
LOAD="$ROOT/target/release/finch-load"

echo "bench: starting the camera and gst-rtsp-server"
peers start gst-relay >/dev/null
CLIP="$STATE_PEERS/media/clip.mp4"
GST_PID="$(peers pid gst-relay)"

# Two Finch processes, one per role, so each row's server pays for its own ingest only (as gst
# relays one camera): one fed by ffmpeg, one pulling the camera.
finch_config() { # NAME RTSP_PORT RTP_PORT ADMIN_PORT PATHS
  cat >"$STATE/$1.toml" <<EOF
[rtsp]
port = $2
rtp_port = $3
listen_addresses = ["127.0.0.1"]

[admin]
listen = "127.0.0.1:$4"

# Two Finch processes on one machine: HLS (not measured here) off for both.
[hls]
enabled = false

[limits]
max_connections = 20000
max_readers_per_path = 20000

$5
EOF
}
# Paths listed in the config are the only ones: the pushed one too.
finch_config finch-push "$RTSP_PORT" 18000 "$ADMIN_PORT" '[paths."live/bench"]'
finch_config finch-pull "$PULL_PORT" 18100 "$PULL_ADMIN_PORT" "[paths.\"live/cam\"]
source = \"$CAMERA_URL\""
start_finch() { # NAME ADMIN_PORT; sets STARTED_PID
  taskset -c "$SERVER_CPU" "$FINCH" --config "$STATE/$1.toml" 2>"$STATE/$1.log" &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$2/healthz" && break; sleep 0.1; done
}
start_finch finch-push "$ADMIN_PORT"
FINCH_PID=$STARTED_PID
start_finch finch-pull "$PULL_ADMIN_PORT"
PULL_PID=$STARTED_PID
taskset -c "$CLIENT_CPU" ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$CLIP" \
  -c copy -f rtsp -rtsp_transport tcp "rtsp://127.0.0.1:$RTSP_PORT/live/bench" >"$STATE/publisher.log" 2>&1 &
PIDS+=("$!")
sleep 3

echo "bench: recording ${SECS}+5 s of the stream for the baseline"
"$LOAD" record --url "rtsp://127.0.0.1:$RTSP_PORT/live/bench" --secs $((SECS + 5)) --out "$STATE/clip.dump" 2>>"$STATE/record.log"
taskset -c "$SERVER_CPU" "$LOAD" baseline --dump "$STATE/clip.dump" --listen "127.0.0.1:$BASE_PORT" >"$STATE/baseline.log" 2>&1 &
BASE_PID=$!
PIDS+=("$BASE_PID")
sleep 1

# run SERVER TRANSPORT N URL PID [extra finch-load flags]: one row.
run() {
  local server="$1" transport="$2" n="$3" url="$4" pid="$5"; shift 5
  echo "bench: $server $transport N=$n"
  local line
  if ! line="$(taskset -c "$CLIENT_CPU" "$LOAD" --url "$url" --readers "$n" --secs "$SECS" \
      --transport "$transport" --pid "$pid" --json "$@" 2>>"$STATE/load.log")"; then
    echo "bench: finch-load failed for $server $transport N=$n (see $STATE/load.log)" >&2
    return 0
  fi
  local ramp="${RAMP:-500}"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(server=sys.argv[2], transport=sys.argv[3], n=int(sys.argv[4]), ramp=int(sys.argv[5])); print(json.dumps(d))' \
    "$line" "$server" "$transport" "$n" "$ramp" >>"$RESULTS"
  sleep 2   # let the servers settle the departed readers before the next row
}

PUSH="rtsp://127.0.0.1:$RTSP_PORT/live/bench"
PULL="rtsp://127.0.0.1:$PULL_PORT/live/cam"
BASE="rtsp://127.0.0.1:$BASE_PORT/live/bench"
for n in $READERS; do
  for t in tcp udp; do
    run finch-push "$t" "$n" "$PUSH" "$FINCH_PID"
    run finch-pull "$t" "$n" "$PULL" "$PULL_PID"
    run gst "$t" "$n" "$GST_URL" "$GST_PID"
  done
  run baseline tcp "$n" "$BASE" "$BASE_PID"
done
for n in $MORE; do
  run finch-push tcp "$n" "$PUSH" "$FINCH_PID"
done
# Connect storm: every reader at once.
RAMP=0 run finch-push tcp 1000 "$PUSH" "$FINCH_PID" --ramp-per-sec 0
RAMP=0 run gst tcp 1000 "$GST_URL" "$GST_PID" --ramp-per-sec 0

python3 "$ROOT/scripts/bench_report.py" "$RESULTS" "$OUT" "$SECS" "$CLIP"
echo "bench: wrote $OUT"
