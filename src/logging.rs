//! The process's log: stderr or a file (`log.file`), text or JSON, with a level that a config
//! reload can change and a file that SIGUSR1 reopens after rotation.
//!
//! Lines are handed to a writer thread through a bounded queue (`tracing-appender`'s
//! non-blocking writer), never written from the task that logs: a slow or stuck stderr (a full
//! pipe, a stalled journald) must not stall the worker, whose heartbeat would then stop and get
//! it killed as hung. When the queue is full a line is dropped and counted
//! (`finch_log_lines_dropped_total`). Colours only when stderr is a terminal.

use finch_config::Config;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Lines queued for the writer thread at most; more are dropped and counted.
const QUEUED_LINES: usize = 16 * 1024;

/// Where log lines go: stderr, or a file that can be reopened. Written by the writer thread only.
#[derive(Clone)]
struct Sink(Option<Arc<Mutex<File>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(f) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            None => std::io::stderr().flush(),
        }
    }
}

/// The registry under its reloadable level filter, which the formatting layer sits on.
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Handles to change the log while running.
#[derive(Clone)]
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Option<(String, Arc<Mutex<File>>)>,
    dropped: ErrorCounter,
}

/// The writer thread's guard: dropping it writes out what is queued.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

fn filter_for(config: &Config) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the global subscriber. A log file that cannot be opened falls back to stderr, with
/// a line saying so: losing the log must not stop the server.
pub fn init(config: &Config) -> Logging {
    let (filter, handle) = reload::Layer::new(filter_for(config));
    let (file, open_error) = match config.log.file.as_str() {
        "" => (None, None),
        path => match open(path) {
            Ok(f) => (Some((path.to_owned(), Arc::new(Mutex::new(f)))), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot open log file {path}: {e}; logging to stderr"
                )),
            ),
        },
    };
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("finch-log")
        .finish(Sink(file.as_ref().map(|(_, f)| f.clone())));
    let dropped = writer.error_counter();
    *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    let fmt: Box<dyn Layer<Filtered> + Send + Sync> = if config.log.format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    if let Some(e) = open_error {
        tracing::error!("{e}");
    }
    Logging {
        filter: handle,
        file,
        dropped,
    }
}

/// Writes out what is queued; call before the process exits (`exit` runs no destructors).
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(|e| e.into_inner()).take());
}

impl Logging {
    /// Reopens the log file (after rotation).
    pub fn reopen(&self) {
        if let Some((path, file)) = &self.file {
            match open(path) {
                Ok(f) => *file.lock().unwrap_or_else(|e| e.into_inner()) = f,
                Err(e) => tracing::error!(path, error = %e, "cannot reopen the log file"),
            }
        }
    }

    /// Applies a reloaded config's level.
    pub fn apply(&self, config: &Config) {
        if let Err(e) = self.filter.reload(filter_for(config)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }

    /// Lines dropped so far because the destination could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// A destination that blocks until released, like a pipe nobody reads.
    #[derive(Clone)]
    struct Stuck(Arc<AtomicBool>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            while !self.0.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_destination_drops_and_counts_lines_instead_of_blocking() {
        let release = Arc::new(AtomicBool::new(false));
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(100)
            .finish(Stuck(release.clone()));
        let counter = writer.error_counter();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_writer(writer));
            tracing::subscriber::with_default(subscriber, || {
                for i in 0..10_000 {
                    tracing::info!(i, "a line");
                }
            });
            let _ = done.send(());
        });
        // With a blocking writer the logging thread would never get here while the destination
        // is stuck: the bound only keeps a regression from hanging the test run.
        let returned = finished.recv_timeout(Duration::from_secs(60)).is_ok();
        release.store(true, Ordering::Relaxed);
        drop(guard);
        assert!(returned, "logging blocked on a stuck destination");
        assert!(
            counter.dropped_lines() > 9_000,
            "{}",
            counter.dropped_lines()
        );
    }
}
