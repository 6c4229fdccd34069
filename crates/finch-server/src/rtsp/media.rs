//! Writing a playing reader's packets: interleaved `$` frames in its RTSP connection (one
//! `writev` per batch, the packets' own buffers as the iovecs, no copy), or datagrams from the
//! shared UDP pair to its client ports.

use super::session::{Playing, TrackTransport};
use crate::udp::Udp;
use finch_proto::rtsp::write_interleaved_header;
use finch_relay::Packet;
use std::io::IoSlice;
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
    let mut bodies: Vec<&[u8]> = Vec::with_capacity(batch.len());
    let (mut packets, mut bytes, mut tcp_bytes) = (0u64, 0u64, 0u64);
    for p in batch {
        match tracks.get(p.track).copied().flatten() {
            Some(TrackTransport::Tcp { rtp, rtcp }) => {
                let ch = if p.is_rtcp() { rtcp } else { rtp };
                if let Some(h) = write_interleaved_header(ch, p.data.len()) {
                    scratch.headers.push(h);
                    bodies.push(&p.data);
                    tcp_bytes += p.data.len() as u64;
                }
            }
            Some(TrackTransport::Udp { rtp, rtcp, pair }) => {
                let Some(udp) = udp else { continue };
                let to = if p.is_rtcp() { rtcp } else { rtp };
                if udp.send(pair, p.is_rtcp(), &p.data, to).await {
                    packets += 1;
                    bytes += p.data.len() as u64;
                }
                if playing.paced > 0 {
                    playing.paced -= 1;
                    if playing.paced.is_multiple_of(UDP_BURST_PACKETS_PER_MS) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            None => {}
        }
    }
    if !bodies.is_empty() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * bodies.len());
        for (h, b) in scratch.headers.iter().zip(&bodies) {
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(b));
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = sock.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        packets += bodies.len() as u64;
        bytes += tcp_bytes;
    }
    playing.reader.sent(packets, bytes);
    Ok(Written { tcp_bytes })
}
