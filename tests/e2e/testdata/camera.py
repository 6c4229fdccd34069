#!/usr/bin/python3
"""A stand-in IP camera for Finch's pull tests: gst-rtsp-server (not Finch) serving the H.264
RTP that ffmpeg sends it over UDP, as a camera serves its sensor's stream.

  camera.py --port 8600 --path /cam --feed 5004 [--address 127.0.0.1] [--user u --password p]

One shared media: every client sees the same live stream, as from a camera. With --user, the
camera asks for credentials (Digest and Basic). Listens on --address (127.0.0.1); stops on SIGTERM.
Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).
"""
import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--feed", type=int, required=True, help="UDP port ffmpeg sends RTP to")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    caps = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"
    factory.set_launch(
        f"( udpsrc port={args.feed} caps=\"{caps}\" ! rtph264depay ! h264parse config-interval=-1"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        auth.add_digest(args.user, args.password, token)
        # Digest only: the method a camera offers by default, and the harder one for Finch to answer.
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role("user")
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    server.attach(None)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
