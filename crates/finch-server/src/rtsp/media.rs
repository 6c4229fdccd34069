//! Writing a playing reader's packets: interleaved `$` frames in its RTSP connection (one
//! `writev` per batch, no copy: runs of packets its frame's shared buffer already holds framed
//! on the reader's channels go out as one slice each, other packets as header and body), or
//! datagrams from the shared UDP pair to its client ports (one `sendmmsg` per batch).

use super::session::{Playing, TrackTransport};
use crate::udp::Udp;
use finch_relay::interleaved::{Interleaved, MAX_SLICES};
use finch_relay::Packet;
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
    tcp: Interleaved,
}

/// What a batch cost.
pub(crate) struct Written {
    /// Bytes the TCP peer took.
    pub(crate) tcp_bytes: u64,
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
    let tcp = &mut scratch.tcp;
    tcp.clear();
    let (mut packets, mut bytes, mut tcp_packets) = (0u64, 0u64, 0u64);
    let mut out = Datagrams::default();
    for (i, p) in batch.iter().enumerate() {
        match tracks.get(p.track).copied().flatten() {
            Some(TrackTransport::Tcp { rtp, rtcp }) => {
                let ch = if p.is_rtcp() { rtcp } else { rtp };
                if tcp.push(batch, i, ch) {
                    bytes += p.data().len() as u64;
                    tcp_packets += 1;
                }
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
    let mut tcp_bytes = 0;
    if !tcp.is_empty() {
        // On the stack: no allocation per batch (a frame is usually one slice).
        let mut slots = [IoSlice::new(&[]); MAX_SLICES];
        let mut from = 0;
        while from < tcp.pieces() {
            let (next, n) = tcp.slices(batch, from, &mut slots);
            if n == 0 {
                break;
            }
            let mut rest: &mut [IoSlice<'_>] = &mut slots[..n];
            while !rest.is_empty() {
                let n = sock.write_vectored(rest).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut rest, n);
            }
            from = next;
        }
        packets += tcp_packets;
        tcp_bytes = tcp.len() as u64;
    }
    playing.reader.sent(packets, bytes);
    Ok(Written { tcp_bytes })
}
