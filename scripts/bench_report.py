#!/usr/bin/env python3
"""Turns the rows scripts/bench.sh collected (one finch-load JSON summary per line) into
docs/benchmarks.md: the machine, the commands, one table per transport, and the targets of
issue 12 checked against this run's own figures."""

import datetime
import json
import os
import platform
import subprocess
import sys


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib():
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def fmt(v, spec=".3f", none="–"):
    return none if v is None else format(v, spec)


def main():
    results, out, secs, clip = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rows = [json.loads(l) for l in open(results) if l.strip()]
    by = {(r["server"], r["transport"], r["n"], r["ramp"]): r for r in rows}

    def cpu(server, t, n, ramp=500):
        r = by.get((server, t, n, ramp))
        return r and r.get("cpu_s_per_gbit")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rev = sh("git", "-C", root, "rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if sh("git", "-C", root, "status", "--porcelain", "-uno") else ""
    rate = sh("ffprobe", "-v", "quiet", "-show_entries", "format=bit_rate", "-of", "csv=p=0", clip)
    gst = sh("gst-inspect-1.0", "--version").splitlines()
    ff = sh("ffmpeg", "-version").splitlines()

    md = []
    md.append("# Benchmarks\n")
    md.append("Written by `scripts/bench.sh` from one run: every figure below comes from the same run on the same")
    md.append("machine, so compare the ratios, not the absolute figures with another run (they drift 10-30 %")
    md.append("between runs on shared machines).\n")
    md.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; Finch {rev}{dirty}")
    md.append(f"- Machine: {os.cpu_count()} cores ({cpu_model()}), {mem_gib()}, Linux {platform.release()}")
    md.append(f"- Peers: {gst[1] if len(gst) > 1 else 'GStreamer ?'} (gst-rtsp-server, shared factory relaying the camera); "
              f"{' '.join(ff[0].split()[:3]) if ff else 'ffmpeg ?'} as publisher and camera feed")
    mbit = f"{int(rate) / 1e6:.2f} Mbit/s" if rate.isdigit() else "~2 Mbit/s"
    md.append(f"- Clip: `{os.path.basename(clip)}`, H.264 1280x720 25 fps + AAC, {mbit}, a keyframe every 2 s, played live and looped")
    md.append(f"- Each row: `taskset -c 1 target/release/finch-load --url URL --readers N --secs {secs} "
              "--transport T --pid SERVER_PID --json` (readers ramp in at 500 a second unless the row says 0); "
              "servers on core 0, client on core 1")
    md.append("- Servers: **finch-push** (a Finch fed by `ffmpeg -re ... -f rtsp`), **finch-pull** (another Finch, pulling the "
              "stand-in camera as `source = \"rtsp://127.0.0.1:8600/up\"`; one process per role, so each pays for "
              "its own ingest only, as gst does), **gst** (gst-rtsp-server relaying the "
              "same camera), **baseline** (`finch-load baseline`: the recorded stream written to each TCP "
              "reader, one write per frame, no RTSP logic)\n")
    md.append("Columns: server CPU-seconds (its whole process tree) per delivered Gbit; the share of its one core the "
              "server used (near 100 % it was saturated); delivered payload against what each reader was due by "
              "its sequence numbers; readers that got at least 99 %; packets lost in sequence gaps; how far "
              "readers' video fell behind real time (receiving time less RTP media time: a server that cannot keep "
              "up without dropping shows here, not in the loss) and how many fell more than 1 s behind; "
              "peak RSS growth per reader; time from PLAY's answer to the first keyframe packet (a late "
              "joiner's first frame: Finch starts it from its GOP cache, gst and the baseline wait for the next keyframe); connect (TCP connect to "
              "PLAY's answer); the load client's own CPU share (near 100 % it, not the server, was the limit).\n")

    for t in ("tcp", "udp"):
        md.append(f"## RTP over {'TCP (interleaved)' if t == 'tcp' else 'UDP'}\n")
        md.append("| N | server | CPU-s/Gbit | : gst | : baseline | server core | Mbit/s | delivered | readers ≥ 99 % | gaps | behind live s (median / p99) | > 1 s behind | KiB/reader | first key ms (median / p99) | connect ms (median / p99) | all connected ms | client CPU |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted((r for r in rows if r["transport"] == t), key=lambda r: (r["n"], r["ramp"] == 0, r["server"])):
            n, s = r["n"], r["server"]
            c = r.get("cpu_s_per_gbit")
            g = cpu("gst", t, n, r["ramp"])
            b = cpu("baseline", "tcp", n, r["ramp"]) if t == "tcp" else None
            vs_g = f"{c / g:.2f}" if c and g and s != "gst" else ""
            vs_b = f"{c / b:.2f}" if c and b and s != "baseline" else ""
            wall = r.get("wall_s") or 0
            client = f"{100 * r['client_cpu_s'] / wall:.0f} %" if r.get("client_cpu_s") is not None and wall else "–"
            core = f"{100 * r['server_cpu_s'] / wall:.0f} %" if r.get("server_cpu_s") is not None and wall else "–"
            label = f"{n}" + (" (ramp 0)" if r["ramp"] == 0 else "")
            md.append(
                f"| {label} | {s} | {fmt(c)} | {vs_g} | {vs_b} | {core} | {fmt(r.get('mbit_s'), '.0f')} | "
                f"{fmt(r.get('delivered_pct'), '.2f')} % | {r.get('readers_ge_99', 0)}/{n} | {r.get('gaps', 0)} | "
                f"{fmt(r.get('behind_s_median'), '.2f')} / {fmt(r.get('behind_s_p99'), '.2f')} | {r.get('readers_behind_1s', 0)} | "
                f"{fmt(r.get('server_kib_per_reader'), '.1f')} | {fmt(r.get('first_key_ms_median'), '.1f')} / "
                f"{fmt(r.get('first_key_ms_p99'), '.1f')} | {fmt(r.get('connect_ms_median'), '.1f')} / "
                f"{fmt(r.get('connect_ms_p99'), '.1f')} | {fmt(r.get('all_connected_ms'), '.0f')} | {client} |"
            )
        md.append("")

    md.append("## Targets, checked against this run\n")
    failed = [r for r in rows if r.get("failed")]
    for r in failed:
        md.append(f"- Note: {r['failed']} of {r['n']} readers of {r['server']} ({r['transport']}) failed: {r.get('errors')}")

    def check(name, ok, detail):
        mark = "met" if ok else ("not measured" if ok is None else "**not met**")
        md.append(f"- {name}: {mark} ({detail})")

    for n in (300, 1000):
        f, g, b = cpu("finch-push", "tcp", n), cpu("gst", "tcp", n), cpu("baseline", "tcp", n)
        check(f"TCP N={n}: ≤ 1/3 of gst's CPU per Gbit", (f / g <= 1 / 3) if f and g else None,
              f"{fmt(f)} vs {fmt(g)}: {f / g:.2f}×" if f and g else "missing rows")
        check(f"TCP N={n}: ≤ 1.5× the baseline's", (f / b <= 1.5) if f and b else None,
              f"{fmt(f)} vs {fmt(b)}: {f / b:.2f}×" if f and b else "missing rows")
        r = by.get(("finch-push", "tcp", n, 500))
        if r:
            full = r.get("readers_ge_99_9", 0)
            check(f"TCP N={n}: ≥ 99.9 % of the payload to ≥ 99 % of readers, no gap loss, none behind",
                  full >= 0.99 * n and r.get("gaps", 1) == 0 and r.get("readers_behind_1s", 1) == 0,
                  f"{full}/{n} readers ≥ 99.9 %, {r.get('gaps')} lost in gaps, {r.get('readers_behind_1s')} > 1 s behind")
    f, g = cpu("finch-push", "udp", 1000), cpu("gst", "udp", 1000)
    r = by.get(("finch-push", "udp", 1000, 500))
    check("UDP N=1000: ≤ 1/2 of gst's CPU per Gbit, no loss",
          (f / g <= 0.5 and r.get("gaps", 1) == 0 and r.get("readers_behind_1s", 1) == 0) if f and g and r else None,
          f"{fmt(f)} vs {fmt(g)}: {f / g:.2f}×, {r.get('gaps')} lost in gaps" if f and g and r else "missing rows")
    top = max((r for r in rows if r["server"] == "finch-push" and r["transport"] == "tcp" and r["ramp"] == 500
               and r.get("readers_ge_99", 0) >= 0.99 * r["n"] and r.get("gaps", 1) == 0
               and r.get("readers_behind_1s", 1) == 0),
              key=lambda r: r["n"], default=None)
    check("≥ 6000 TCP readers on one core without loss", bool(top and top["n"] >= 6000),
          f"largest lossless N in this run: {top['n'] if top else 'none'}")
    kib = [r.get("server_kib_per_reader") for r in rows if r["server"].startswith("finch") and r["n"] >= 1000]
    kib = [k for k in kib if k is not None]
    check("≤ ~64 KiB per reader", bool(kib) and max(kib) <= 64, f"at most {max(kib):.1f} KiB" if kib else "no rows")
    keys = [r.get("first_key_ms_median") for r in rows if r["server"].startswith("finch") and r["ramp"] == 500]
    keys = [k for k in keys if k is not None]
    check("late joiner's first frame < 100 ms at the median", bool(keys) and max(keys) < 100,
          f"worst median {max(keys):.1f} ms" if keys else "no rows")
    r = by.get(("finch-push", "tcp", 1000, 0))
    check("1000 readers connect in < 1 s", ((r.get("all_connected_ms") or 1e9) < 1000) if r else None,
          f"{fmt(r.get('all_connected_ms'), '.0f')} ms from the first connect to the last PLAY answer" if r else "missing row")
    md.append("")
    with open(out, "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
