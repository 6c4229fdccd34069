//! Finch's relay core: paths, their sources, and the fan-out of each source's packets to any
//! number of readers. It knows nothing of RTSP, HLS or sockets: sources push packets in, readers
//! pull them out, each from its own task, so the core is tested and benchmarked without a
//! network (tokio is used only for its wake-up primitive).
//!
//! Layout:
//! - `registry`: the paths and which source holds each; [`Publisher`] is a source's hold on its
//!   path. `path`: a path's entry and life-cycle state.
//! - `stream`: one source's packets, its tracks and what it learnt of them (keyframes, parameter
//!   sets, sender reports). `ring`: the shared packet buffer that is also the GOP cache.
//! - `reader`: a reader's position in a stream and the slow-reader policy.
//! - `packet`, `params` (in-band parameter sets), `counters` (traffic, per reader).
//!
//! Invariants: a source never waits for a reader; a packet's payload is never copied per
//! reader; memory is bounded per stream, whatever readers do; a handle dropped (a task ended or
//! panicked) gives back what it held.

mod continuity;
mod counters;
pub mod interleaved;
mod packet;
mod params;
mod path;
mod reader;
mod registry;
mod ring;
mod stream;

pub use continuity::Numbering;
pub use counters::{ReaderStats, Totals};
pub use interleaved::Interleaved;
pub use packet::{Framed, Kind, Packet, PACKET_OVERHEAD};
pub use path::{Evict, PathEntry, PathState, Policy, SourceInfo, SourceKind};
pub use reader::{Ended, Reader, ReaderInfo, Start};
pub use registry::{AnnounceError, Publisher, Registry};
pub use ring::Budget;
pub use stream::{Feed, Incompatible, JoinError, RelayParams, Stream, TrackInfo};

#[cfg(test)]
mod tests;
