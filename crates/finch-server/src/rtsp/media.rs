//! Writing a playing reader's packets: interleaved `$` frames in its RTSP connection (one
//! `writev` per batch, no copy: runs of packets its frame's shared buffer already holds framed
//! on the reader's channels go out as one slice each, other packets as header and body), or
//! datagrams from the shared UDP pair to its client ports (one `sendmmsg` per batch).

use super::session::{Playing, TrackTransport};
use crate::udp::Udp;
use finch_proto::rtsp::write_interleaved_header;
use finch_relay::{Framed, Packet};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The GOP cache reaches a UDP reader at most this many packets per millisecond (about 90 Mbit/s
/// of 1400-byte packets): sent at once, a 2 s GOP overflows a typical 208 KiB socket receive
/// buffer and the player loses packets of the very keyframe it joined for (measured: 0.15 % loss
/// over 1000 UDP readers unpaced, none paced). TCP needs no pacing: its flow control paces.
const UDP_BURST_PACKETS_PER_MS: u64 = 8;

/// Buffers reused from batch to batch.
#[derive(Default)]
pub(crate) struct Scratch {
    headers: Vec<[u8; 4]>,
}

/// What a batch cost.
pub(crate) struct Written {
    /// Bytes the TCP peer took.
    pub(crate) tcp_bytes: u64,
}

/// One piece of a `writev`.
enum Piece<'a> {
    /// Framed packets back to back in one shared buffer: the first one and the run's end.
    Run(Framed<'a>, usize),
    /// A header from `Scratch::headers` (by index) and the packet.
    Packet(usize, &'a [u8]),
}

/// A batch's datagrams for one UDP pair, sent together.
#[derive(Default)]
struct Datagrams<'a> {
    pair: Option<usize>,
    rtp: Vec<(&'a [u8], SocketAddr)>,
    rtcp: Vec<(&'a [u8], SocketAddr)>,
}

impl Datagrams<'_> {
    /// Sends what is queued (one `sendmmsg` per socket) and counts what went out.
    async fn flush(&mut self, udp: &Udp, packets: &mut u64, bytes: &mut u64) {
        let Some(pair) = self.pair else { return };
        for (rtcp, list) in [(false, &mut self.rtp), (true, &mut self.rtcp)] {
            if list.is_empty() {
                continue;
            }
            let len: u64 = list.iter().map(|(d, _)| d.len() as u64).sum();
            let sent = udp.send_batch(pair, rtcp, list).await as u64;
            *packets += sent;
            // A refused datagram is rare and of one reader: count the bytes pro rata.
            *bytes += len * sent / list.len() as u64;
            list.clear();
        }
    }
}

/// Writes one batch to the reader; counts what went out.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    sock: &mut W,
    udp: Option<&Udp>,
    playing: &mut Playing,
    tracks: &[Option<TrackTransport>],
    batch: &[Packet],
    scratch: &mut Scratch,
) -> std::io::Result<Written> {
    scratch.headers.clear();
    let mut pieces: Vec<Piece<'_>> = Vec::with_capacity(batch.len());
    let (mut packets, mut bytes, mut tcp_bytes, mut tcp_packets) = (0u64, 0u64, 0u64, 0u64);
    let mut out = Datagrams::default();
    for p in batch {
        match tracks.get(p.track).copied().flatten() {
            Some(TrackTransport::Tcp { rtp, rtcp }) => {
                let ch = if p.is_rtcp() { rtcp } else { rtp };
                let len = p.data().len() as u64;
                match p.framed() {
                    Some(f) if f.channel() == ch => {
                        if let Some(Piece::Run(first, end)) = pieces.last_mut() {
                            if first.block.as_ptr() == f.block.as_ptr() && *end == f.start {
                                *end = f.end;
                                tcp_bytes += len;
                                tcp_packets += 1;
                                continue;
                            }
                        }
                        pieces.push(Piece::Run(f, f.end));
                    }
                    _ => {
                        let Some(h) = write_interleaved_header(ch, p.data().len()) else {
                            continue;
                        };
                        scratch.headers.push(h);
                        pieces.push(Piece::Packet(scratch.headers.len() - 1, p.data()));
                    }
                }
                tcp_bytes += len;
                tcp_packets += 1;
            }
            Some(TrackTransport::Udp { rtp, rtcp, pair }) => {
                let Some(udp) = udp else { continue };
                if out.pair.is_some_and(|q| q != pair) {
                    out.flush(udp, &mut packets, &mut bytes).await;
                }
                out.pair = Some(pair);
                if p.is_rtcp() {
                    out.rtcp.push((p.data(), rtcp));
                } else {
                    out.rtp.push((p.data(), rtp));
                }
                if playing.paced > 0 {
                    playing.paced -= 1;
                    if playing.paced.is_multiple_of(UDP_BURST_PACKETS_PER_MS) {
                        out.flush(udp, &mut packets, &mut bytes).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            None => {}
        }
    }
    if let Some(udp) = udp {
        out.flush(udp, &mut packets, &mut bytes).await;
    }
    if !pieces.is_empty() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * pieces.len());
        for piece in &pieces {
            match *piece {
                Piece::Run(f, end) => slices.push(IoSlice::new(&f.block[f.start..end])),
                Piece::Packet(h, data) => {
                    slices.push(IoSlice::new(&scratch.headers[h]));
                    slices.push(IoSlice::new(data));
                }
            }
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = sock.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        packets += tcp_packets;
        bytes += tcp_bytes;
    }
    playing.reader.sent(packets, bytes);
    Ok(Written { tcp_bytes })
}
