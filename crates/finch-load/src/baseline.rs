//! The baseline: the least a server can do to deliver a stream over TCP. It replays a recording
//! in real time, looped (sequence numbers go on across loops, so the load tool sees no loss),
//! and writes each frame (a video access unit, an audio packet, an RTCP report) as one buffer to
//! every playing connection: one `write` per frame per reader, no RTSP logic beyond canned
//! answers, no GOP cache, no per-reader state. Finch's distance from it is the cost of being a
//! server.

use crate::dump::Dump;
use bytes::{BufMut, Bytes, BytesMut};
use finch_proto::rtsp::{Item, Limits, Method, Parser, Request, Response, Status};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// Frames queued per reader before a slow one skips ahead (about 5 s of this stream).
const QUEUE: usize = 512;

/// Packets that go out together: consecutive RTP packets of one channel with one timestamp (an
/// access unit), or a single packet otherwise.
struct Frame {
    at: Duration,
    packets: Vec<(u8, Vec<u8>)>,
}

fn frames(dump: &Dump) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    let ts = |d: &[u8]| (d.len() >= 8).then(|| u32::from_be_bytes([d[4], d[5], d[6], d[7]]));
    for p in &dump.packets {
        let rtp = p.channel % 2 == 0;
        if let Some(last) = out.last_mut() {
            let (ch, prev) = last.packets.last().expect("frames are never empty");
            if rtp && *ch == p.channel && ts(prev) == ts(&p.data) {
                last.packets.push((p.channel, p.data.clone()));
                continue;
            }
        }
        out.push(Frame {
            at: p.at,
            packets: vec![(p.channel, p.data.clone())],
        });
    }
    out
}

/// Serves `dump` on `listen` until killed.
pub async fn serve(dump: Dump, listen: SocketAddr) -> anyhow::Result<()> {
    let frames = frames(&dump);
    anyhow::ensure!(!frames.is_empty(), "the recording is empty");
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "baseline: {} frames of {} packets on rtsp://{}/ (any path)",
        frames.len(),
        dump.packets.len(),
        listener.local_addr()?
    );
    let (tx, _) = broadcast::channel::<Bytes>(QUEUE);
    tokio::spawn(play(frames, tx.clone()));
    let sdp = Bytes::from(dump.sdp.into_bytes());
    loop {
        let (sock, _) = listener.accept().await?;
        let (rx, sdp) = (tx.subscribe(), sdp.clone());
        tokio::spawn(async move {
            let _ = connection(sock, sdp, rx).await;
        });
    }
}

/// Sends the frames at their recorded times, forever.
async fn play(frames: Vec<Frame>, tx: broadcast::Sender<Bytes>) {
    let span = frames.last().map_or(Duration::ZERO, |f| f.at) + Duration::from_millis(40);
    // RTP packets per channel in one loop: the next loop's numbering goes on from there.
    let mut per_loop = [0u16; 256];
    for f in &frames {
        for (ch, _) in &f.packets {
            if ch % 2 == 0 {
                per_loop[usize::from(*ch)] = per_loop[usize::from(*ch)].wrapping_add(1);
            }
        }
    }
    let start = tokio::time::Instant::now();
    for round in 0u32.. {
        let offset = span * round;
        for f in &frames {
            tokio::time::sleep_until(start + offset + f.at).await;
            let mut buf = BytesMut::with_capacity(f.packets.iter().map(|(_, d)| d.len() + 4).sum());
            for (ch, data) in &f.packets {
                buf.put_u8(b'$');
                buf.put_u8(*ch);
                buf.put_u16(data.len() as u16);
                let at = buf.len();
                buf.put_slice(data);
                if ch % 2 == 0 && data.len() >= 4 {
                    let seq = u16::from_be_bytes([data[2], data[3]])
                        .wrapping_add(per_loop[usize::from(*ch)].wrapping_mul(round as u16));
                    buf[at + 2..at + 4].copy_from_slice(&seq.to_be_bytes());
                }
            }
            // No reader: nothing to do.
            let _ = tx.send(buf.freeze());
        }
    }
}

/// Canned answers until PLAY, then every frame as it comes.
async fn connection(
    mut sock: TcpStream,
    sdp: Bytes,
    mut frames: broadcast::Receiver<Bytes>,
) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut parser = Parser::new(Limits::default());
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let req = loop {
            match parser.parse(&mut buf)? {
                Some(Item::Request(r)) => break r,
                Some(_) => continue,
                None => {
                    if sock.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
            }
        };
        let playing = req.method == Method::Play;
        let mut out = BytesMut::new();
        answer(&req, &sdp).write(&mut out);
        sock.write_all(&out).await?;
        if playing {
            break;
        }
    }
    // Keep-alives are read and dropped: the load tool waits for no answer.
    let (mut rd, mut wr) = sock.into_split();
    tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    frames = frames.resubscribe();
    loop {
        match frames.recv().await {
            Ok(f) => wr.write_all(&f).await?,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

fn answer(req: &Request, sdp: &Bytes) -> Response {
    let mut r = Response::new(Status::OK);
    if let Some(cseq) = req.headers.get("CSeq") {
        r.headers.set("CSeq", cseq.to_owned());
    }
    match req.method {
        Method::Options => {
            r.headers
                .set("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN");
        }
        Method::Describe => {
            r.headers.set("Content-Type", "application/sdp");
            let base = if req.uri.ends_with('/') {
                req.uri.clone()
            } else {
                format!("{}/", req.uri)
            };
            r.headers.set("Content-Base", base);
            r.headers.set("Content-Length", sdp.len().to_string());
            r.body = sdp.clone();
        }
        Method::Setup => {
            let transport = req.headers.get("Transport").unwrap_or_default().to_owned();
            r.headers.set("Transport", transport);
            r.headers.set("Session", "1;timeout=60");
        }
        _ => r.headers.set("Session", "1"),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::Packet;

    fn rtp(seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 7]);
        p
    }

    #[test]
    fn an_access_unit_is_one_frame_and_other_channels_break_it() {
        let at = |ms| Duration::from_millis(ms);
        let d = Dump {
            sdp: String::new(),
            packets: vec![
                Packet {
                    at: at(0),
                    channel: 0,
                    data: rtp(1, 100),
                },
                Packet {
                    at: at(0),
                    channel: 0,
                    data: rtp(2, 100),
                },
                Packet {
                    at: at(1),
                    channel: 2,
                    data: rtp(9, 5),
                },
                Packet {
                    at: at(1),
                    channel: 1,
                    data: vec![0x80, 200, 0, 0],
                },
                Packet {
                    at: at(40),
                    channel: 0,
                    data: rtp(3, 3700),
                },
            ],
        };
        let f = frames(&d);
        assert_eq!(
            f.iter().map(|f| f.packets.len()).collect::<Vec<_>>(),
            vec![2, 1, 1, 1]
        );
        assert_eq!(f[3].at, at(40));
    }
}
