//! The process's log: stderr or a file (`log.file`), text or JSON, with a level that a config
//! reload can change and a file that SIGUSR1 reopens after rotation.

use finch_config::Config;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Where log lines go: stderr, or a file that can be reopened.
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
}

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
    let sink = Sink(file.as_ref().map(|(_, f)| f.clone()));
    let ansi = file.is_none();
    let writer = move || sink.clone();
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
    }
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
}
