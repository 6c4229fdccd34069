//! RTSPS: the TLS side of the `[rtsps]` listener (rustls, ring backend).
//!
//! The certificate and key are read from PEM files at start (unreadable: exit 255) and on
//! every reload (unreadable: the reload is refused, the old pair keeps serving). RTP travels
//! interleaved inside the TLS connection; the RTSP server behind it is the same one.

use finch_config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("rtsps.cert_file {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("rtsps.key_file {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("rtsps: the certificate and key cannot be used together: {0}")]
    Pair(String),
}

/// The acceptor for `config`, or `None` when neither RTSPS nor HTTPS for HLS is on.
pub fn load(config: &Config) -> Result<Option<TlsAcceptor>, TlsError> {
    let t = &config.rtsps;
    let https = config.hls.enabled && config.hls.tls;
    if !(t.enabled || https) {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|i| i.collect())
        .map_err(|e| TlsError::Cert {
            path: t.cert_file.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: t.cert_file.clone(),
            reason: "no certificate in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| TlsError::Key {
        path: t.key_file.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// The acceptor in force, swapped on reload.
#[derive(Default)]
pub struct Tls(RwLock<Option<TlsAcceptor>>);

impl Tls {
    /// The acceptor for new connections, if RTSPS is on.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it (connections already up keep theirs).
    pub fn set(&self, acceptor: Option<TlsAcceptor>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
    }
}
