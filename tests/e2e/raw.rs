//! A raw RTSP client, for requests real clients would never send and for counting exactly what
//! the server sends: requests, responses, interleaved frames, a publisher written by hand.

use crate::harness::Finch;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw RTSP connection for requests the real clients would never send.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A response as read by [`Raw`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The session id of the Session header, without its timeout.
    pub fn session_id(&self) -> String {
        let v = self.header("Session").expect("no Session header");
        v.split(';').next().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    /// A connection already made.
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a request with CSeq and the given extra header lines and body.
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        cseq: u32,
        headers: &[&str],
        body: &str,
    ) -> RawResponse {
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.send(req.as_bytes());
        self.response().expect("no response")
    }

    /// SETUP of `base`/trackID=0 over TCP (channels 0-1), then PLAY; returns the session id.
    pub fn play_tcp(&mut self, base: &str) -> String {
        let r = self.request(
            "SETUP",
            &format!("{base}/trackID=0"),
            1,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
            "",
        );
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.session_id();
        let r = self.request("PLAY", base, 2, &[&format!("Session: {id}")], "");
        assert_eq!(r.status, 200, "{r:?}");
        id
    }

    /// Reads the next response, skipping interleaved frames; `None` if the server closed.
    pub fn response(&mut self) -> Option<RawResponse> {
        loop {
            while self.buf.first() == Some(&b'$') {
                if self.buf.len() < 4 {
                    break;
                }
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() < 4 + len {
                    break;
                }
                self.buf.drain(..4 + len);
            }
            if self.buf.first() != Some(&b'$') {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                    let mut lines = head.split("\r\n");
                    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if self.buf.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).to_string();
                        self.buf.drain(..end + 4 + len);
                        return Some(RawResponse {
                            status,
                            headers,
                            body,
                        });
                    }
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Takes what was read past the last response (media that came with PLAY's answer, say).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Whether the server has closed the connection (reads until EOF, discarding data).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut chunk = [0u8; 65536];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// One H.264 track, for publishers written by hand.
pub const H264_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n";

/// A publisher written by hand: ANNOUNCE with `sdp`, SETUP of track 0 with `transport` (which
/// must say mode=record), RECORD. Returns the connection and its Session header.
pub fn raw_publish(finch: &Finch, path: &str, sdp: &str, transport: &str) -> (Raw, String) {
    let mut raw = Raw::connect(finch.rtsp_port);
    let url = finch.url(path);
    let r = raw.request("ANNOUNCE", &url, 1, &["Content-Type: application/sdp"], sdp);
    assert_eq!(r.status, 200, "{r:?}");
    let session = format!("Session: {}", r.session_id());
    let transport = format!("Transport: {transport}");
    let track = format!("{url}/trackID=0");
    let r = raw.request("SETUP", &track, 2, &[&transport, &session], "");
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw.request("RECORD", &url, 3, &[&session], "");
    assert_eq!(r.status, 200, "{r:?}");
    (raw, session)
}

/// Reads interleaved frames for `dur` (skipping any response among them) and returns them as
/// (channel, payload).
pub fn read_interleaved(raw: &mut Raw, dur: Duration) -> Vec<(u8, Vec<u8>)> {
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut frames = Vec::new();
    while start.elapsed() < dur {
        if let Ok(n) = raw.stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        loop {
            if buf.len() >= 4 && buf[0] == b'$' {
                let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                if buf.len() < 4 + len {
                    break;
                }
                frames.push((buf[1], buf[4..4 + len].to_vec()));
                buf.drain(..4 + len);
            } else if !buf.is_empty() && buf[0] != b'$' {
                // A response among the frames (PAUSE's, say) is skipped up to its blank line.
                match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) => {
                        buf.drain(..end + 4);
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
    }
    frames
}

/// Reads interleaved frames on `channel` for `dur` and returns their RTP sequence numbers.
pub fn read_rtp_seqs(raw: &mut Raw, channel: u8, dur: Duration) -> Vec<u16> {
    read_interleaved(raw, dur)
        .into_iter()
        .filter(|(ch, p)| *ch == channel && p.len() >= 12)
        .map(|(_, p)| u16::from_be_bytes([p[2], p[3]]))
        .collect()
}
