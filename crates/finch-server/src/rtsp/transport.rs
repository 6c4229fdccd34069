//! Transport negotiation (RFC 2326 §12.39): from the client's Transport header to how a track
//! travels, and the Transport header to answer with.
//!
//! Offered: RTP/AVP/TCP interleaved (any client) and RTP/AVP unicast UDP to the client's
//! `client_port`s from the shared server pair that reaches it. Not offered: multicast, and a
//! `destination` other than the client itself (that would make the server a traffic
//! reflector).

use super::error::{fail, Result};
use super::session::TrackTransport;
use crate::udp::Udp;
use finch_proto::headers::transport::{
    parse_transport, LowerTransport, TransportError, TransportSpec,
};
use finch_proto::rtsp::{Request, Status};
use std::net::SocketAddr;

/// The first acceptable spec in a request's Transport header.
pub(crate) fn pick(req: &Request, udp: Option<&Udp>) -> Result<TransportSpec> {
    let value = req
        .headers
        .get("Transport")
        .ok_or_else(|| fail(Status::BAD_REQUEST, "no Transport header"))?;
    let specs = parse_transport(value).map_err(|e| match e {
        TransportError::Unsupported(_) => fail(Status::UNSUPPORTED_TRANSPORT, e.to_string()),
        TransportError::Malformed(_) => fail(Status::BAD_REQUEST, e.to_string()),
    })?;
    specs
        .into_iter()
        .find(|s| {
            !s.multicast
                && (s.lower == LowerTransport::Tcp || (udp.is_some() && s.client_port.is_some()))
        })
        .ok_or_else(|| {
            fail(
                Status::UNSUPPORTED_TRANSPORT,
                format!("none of {value:?} is offered"),
            )
        })
}

/// Who asks, for UDP: the client's address and the address it reached.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// The track's transport and the Transport header to answer with. `tracks` are the session's
/// tracks set up so far (their interleaved channels are taken).
pub(crate) fn negotiate(
    spec: &TransportSpec,
    track: usize,
    tracks: &[Option<TrackTransport>],
    peer: &Peer,
    udp: Option<&Udp>,
) -> Result<(TrackTransport, TransportSpec)> {
    let mut reply = spec.clone();
    reply.destination = None;
    reply.source = None;
    match spec.lower {
        LowerTransport::Tcp => {
            let used = |ch: u8| {
                tracks.iter().enumerate().any(|(i, t)| {
                    i != track
                        && matches!(t, Some(TrackTransport::Tcp { rtp, rtcp }) if *rtp == ch || *rtcp == ch)
                })
            };
            let (rtp, rtcp) = match spec.interleaved {
                Some((a, b)) if !used(a) && !used(b) && a != b => (a, b),
                _ => {
                    // No channels asked for, or they clash: pick the first free even pair.
                    let a = (0..=127u8)
                        .map(|i| i * 2)
                        .find(|&a| !used(a) && !used(a + 1))
                        .ok_or_else(|| fail(Status::UNSUPPORTED_TRANSPORT, "no free channel"))?;
                    (a, a + 1)
                }
            };
            reply.interleaved = Some((rtp, rtcp));
            reply.client_port = None;
            reply.server_port = None;
            Ok((TrackTransport::Tcp { rtp, rtcp }, reply))
        }
        LowerTransport::Udp => {
            let udp = udp.ok_or_else(|| fail(Status::UNSUPPORTED_TRANSPORT, "UDP is off"))?;
            let (a, b) = spec
                .client_port
                .ok_or_else(|| fail(Status::UNSUPPORTED_TRANSPORT, "UDP without client_port"))?;
            // Media goes to the address the request came from, never to a `destination`.
            let ip = peer.addr.ip();
            let pair = udp.pair_for(peer.local.ip(), peer.addr).ok_or_else(|| {
                fail(
                    Status::UNSUPPORTED_TRANSPORT,
                    "no UDP socket of the server reaches this address family",
                )
            })?;
            reply.server_port = Some((udp.rtp_port, udp.rtp_port.saturating_add(1)));
            reply.interleaved = None;
            Ok((
                TrackTransport::Udp {
                    rtp: SocketAddr::new(ip, a),
                    rtcp: SocketAddr::new(ip, b),
                    pair,
                },
                reply,
            ))
        }
    }
}
