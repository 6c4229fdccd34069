#!/usr/bin/env python3
"""Plays a Finch path's HLS page in Debian's headless Chromium (through Debian's chromedriver,
so nothing downloads a browser) and prints what the video did, as one JSON object.

    browser.py PAGE_URL STATUS_URL OUT_DIR

It samples the video element every 250 ms for up to 20 s: when playback started, how far
currentTime advanced in the 10 s after, the picture size, and hls.js's distance to live. It
saves OUT_DIR/player.png, then opens STATUS_URL (the admin status page) and saves
OUT_DIR/status.png with the page's text.
"""
import json
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

PROBE = """
var v = document.querySelector('video');
var h = window.finchHls;
return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
        latency: h ? h.latency : null, error: v.error ? v.error.code : null,
        status: (document.getElementById('status') || {}).textContent || ''};
"""


def main():
    page_url, status_url, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,800",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="finch-chromium-"),
    ]:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    out = {"samples": 0}
    try:
        driver.set_page_load_timeout(30)
        opened = time.time()
        driver.get(page_url)
        started = None
        latencies = []
        last = {}
        while time.time() - opened < 25:
            s = driver.execute_script(PROBE)
            last = s
            out["samples"] += 1
            now = time.time()
            if started is None and s["t"] > 0:
                started = (now, s["t"])
                out["first_frame_after_s"] = round(now - opened, 3)
            if s["latency"] is not None and started is not None:
                latencies.append(s["latency"])
            if started is not None and now - started[0] >= 10:
                break
            time.sleep(0.25)
        out["width"] = last.get("w")
        out["height"] = last.get("h")
        out["error"] = last.get("error")
        out["status"] = last.get("status")
        if started is not None:
            out["advanced_s"] = round(last["t"] - started[1], 3)
            out["watched_s"] = round(time.time() - started[0], 3)
        if latencies:
            tail = sorted(latencies[len(latencies) // 2 :])
            out["latency_median_s"] = round(tail[len(tail) // 2], 3)
            out["latency_max_s"] = round(max(latencies[len(latencies) // 2 :]), 3)
        driver.save_screenshot(out_dir + "/player.png")
        driver.get(status_url)
        time.sleep(0.5)
        driver.save_screenshot(out_dir + "/status.png")
        out["status_page"] = driver.find_element("tag name", "body").text
    finally:
        driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
