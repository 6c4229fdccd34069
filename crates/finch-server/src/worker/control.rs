//! The worker's end of the control channel to its supervisor (protocol in `finch-control`).
//!
//! One task writes what the worker reports (heartbeats, error-log entries, fatal, restart
//! requests, reloaded configs) as lines; it also notices the supervisor going away (end of
//! stream), in which case the worker stops: a worker must not outlive its supervisor.

use crate::report::Reports;
use finch_control::encode;
use std::os::unix::net::UnixStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Runs the channel until the supervisor closes it, or `finish` fires (the worker is exiting:
/// what is queued, such as a Fatal report, is written first). Any way out but `finish` means the
/// supervisor is gone, and stops the worker: it must not outlive its supervisor.
pub async fn run(
    stream: UnixStream,
    mut rx: Reports,
    stop: CancellationToken,
    finish: CancellationToken,
) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;
    let (mut read, mut write) = stream.into_split();
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            biased;
            // What must arrive goes first, ahead of any backlog of heartbeats and log lines.
            msg = rx.reliable.recv() => match msg {
                Some(m) => {
                    if write.write_all(encode(&m).as_bytes()).await.is_err() {
                        break;
                    }
                }
                None => return Ok(()),
            },
            msg = rx.lossy.recv() => match msg {
                Some(m) => {
                    if write.write_all(encode(&m).as_bytes()).await.is_err() {
                        break;
                    }
                }
                None => return Ok(()),
            },
            _ = finish.cancelled() => {
                while let Ok(m) = rx.reliable.try_recv() {
                    write.write_all(encode(&m).as_bytes()).await?;
                }
                while let Ok(m) = rx.lossy.try_recv() {
                    write.write_all(encode(&m).as_bytes()).await?;
                }
                return Ok(());
            }
            r = read.read(&mut scratch) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    tracing::error!("the supervisor has gone away; stopping");
    stop.cancel();
    Ok(())
}
