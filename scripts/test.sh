#!/usr/bin/env bash
# Runs Finch's whole test suite. On a fresh Debian machine it first installs, from Debian's
# packages, what the end-to-end tests drive as real clients (ffmpeg, GStreamer, curl), a stand-in
# camera (gst-rtsp-server), openssl (test certificates), redis-server (cluster tests) and Chromium
# with its driver (the browser test); and Selenium from PyPI into a virtualenv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v gst-launch-1.0 >/dev/null 2>&1 || need+=(gstreamer1.0-tools)
# Self-signed certificates for the RTSPS tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# HTTPS checks of the HLS listener.
command -v curl >/dev/null 2>&1 || need+=(curl)
# The browser test: Debian's headless Chromium driven through Debian's chromedriver (nothing
# downloads a browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# The cluster tests start their own Redis (redis-tools, which it pulls in, has redis-cli).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# rtspsrc and rtph264depay (good), h264parse (bad), avdec_h264 (libav), rtspclientsink (rtsp).
for plugin in rtspsrc:gstreamer1.0-plugins-good h264parse:gstreamer1.0-plugins-bad avdec_h264:gstreamer1.0-libav rtspclientsink:gstreamer1.0-rtsp; do
  if ! gst-inspect-1.0 "${plugin%%:*}" >/dev/null 2>&1; then need+=("${plugin#*:}"); fi
done
# The stand-in camera the pull tests read from (tests/e2e/testdata/camera.py) is gst-rtsp-server
# driven from Python.
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' >/dev/null 2>&1; then
  need+=(python3-gi gir1.2-gst-rtsp-server-1.0)
fi
if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing test dependencies: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Selenium (from PyPI) in a virtualenv of its own under target/, for the browser test.
venv="$PWD/target/e2e-venv"
if ! "$venv/bin/python" -c 'import selenium' >/dev/null 2>&1; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check selenium
fi
export E2E_BROWSER_PYTHON="$venv/bin/python"

cargo test --workspace "$@"
