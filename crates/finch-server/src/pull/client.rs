//! Finch as an RTSP client, to pull from a camera: one control connection (TCP, or TLS for
//! `rtsps://`), requests with CSeq and the session, answers to the camera's challenges, and
//! the same sans-IO parser the server uses, so interleaved `$` frames arrive as shared `Bytes`.
//!
//! Built on finch-proto rather than the retina crate: retina hands out packets as borrowed
//! slices (a copy each to relay them), has no RTSPS, and treats out-of-order packets on TCP as
//! fatal, which some cameras send after a reconnect; here the camera's packets are forwarded as
//! they came, and the Digest code is the server's own.

use super::PullError;
use bytes::{Bytes, BytesMut};
use finch_proto::auth::client::Answer;
use finch_proto::rtsp::{Item, Limits, Method, Parser, Request, Response};
use finch_proto::uri::RtspUrl;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream a client speaks over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a camera may take to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One control connection to a camera.
pub(crate) struct Client {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    parser: Parser,
    cseq: u32,
    url: RtspUrl,
    answer: Option<Answer>,
    nc: u32,
    cnonce: String,
    /// The session id the camera gave, once SETUP has.
    pub(crate) session: Option<String>,
    /// The camera's address, and ours towards it.
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// What the read loop gets from the camera.
pub(crate) enum Incoming {
    /// An interleaved frame.
    Frame(u8, Bytes),
    /// A response (to a keep-alive).
    Response(Response),
}

impl Client {
    /// Connects to the camera (TCP, then TLS for `rtsps://`), within `timeout`.
    pub(crate) async fn connect(url: &RtspUrl, timeout: Duration) -> Result<Client, PullError> {
        let addr = (url.host.as_str(), url.port);
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PullError::Timeout("connecting"))?
            .map_err(|e| PullError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let peer = tcp
            .peer_addr()
            .map_err(|e| PullError::Connect(e.to_string()))?;
        let local = tcp
            .local_addr()
            .map_err(|e| PullError::Connect(e.to_string()))?;
        let io: Box<dyn Io> = if url.tls {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| PullError::Connect(format!("TLS name: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(tls_client_config());
            let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| PullError::Timeout("the TLS handshake"))?
                .map_err(|e| PullError::Connect(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut cnonce = [0u8; 8];
        let _ = getrandom::fill(&mut cnonce);
        Ok(Client {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            parser: Parser::new(Limits {
                // A camera's DESCRIBE can be long; its frames up to 64 KiB.
                max_body_bytes: 1 << 20,
                max_interleaved_bytes: 65535,
                ..Limits::default()
            }),
            cseq: 0,
            url: url.clone(),
            answer: None,
            nc: 0,
            cnonce: cnonce.iter().map(|b| format!("{b:02x}")).collect(),
            session: None,
            peer,
            local,
        })
    }

    /// The camera's URL without credentials (what requests name).
    pub(crate) fn base(&self) -> &str {
        &self.url.request_uri
    }

    fn prepare(&mut self, method: Method, uri: &str, headers: &[(&str, String)]) -> BytesMut {
        self.cseq += 1;
        let mut req = Request::new(method.clone(), uri);
        req.headers.set("CSeq", self.cseq.to_string());
        req.headers
            .set("User-Agent", concat!("Finch/", env!("CARGO_PKG_VERSION")));
        if let Some(s) = &self.session {
            req.headers.set("Session", s.clone());
        }
        for (k, v) in headers {
            req.headers.set(k, v.clone());
        }
        if let (Some(a), Some((user, pass))) = (&self.answer, &self.url.credentials) {
            self.nc += 1;
            let h = a.authorization(user, pass, method.as_str(), uri, self.nc, &self.cnonce);
            req.headers.set("Authorization", h);
        }
        let mut out = BytesMut::new();
        req.write(&mut out);
        out
    }

    /// Sends a request without waiting for its answer (keep-alives, TEARDOWN).
    pub(crate) async fn send(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
    ) -> Result<(), PullError> {
        let out = self.prepare(method, uri, headers);
        self.io
            .write_all(&out)
            .await
            .map_err(|e| PullError::Connection(e.to_string()))
    }

    /// Sends a request and waits for its answer, answering one authentication challenge.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
    ) -> Result<Response, PullError> {
        for attempt in 0..2 {
            self.send(method.clone(), uri, headers).await?;
            let resp = tokio::time::timeout(ANSWER_TIMEOUT, self.response())
                .await
                .map_err(|_| PullError::Timeout("an answer"))??;
            if resp.status == 401 && attempt == 0 && self.url.credentials.is_some() {
                let challenges = resp
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
                    .map(|(_, v)| v);
                if let Some(a) = Answer::choose(challenges) {
                    self.answer = Some(a);
                    self.nc = 0;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(PullError::Status(401, method.as_str().to_owned()))
    }

    /// The next response, dropping frames that come before it.
    async fn response(&mut self) -> Result<Response, PullError> {
        loop {
            match self.next().await? {
                Incoming::Response(r) => return Ok(r),
                Incoming::Frame(..) => {}
            }
        }
    }

    /// The next thing the camera sends. Cancel-safe: bytes read stay in the buffer.
    pub(crate) async fn next(&mut self) -> Result<Incoming, PullError> {
        loop {
            match self.parser.parse(&mut self.rbuf) {
                Ok(Some(Item::Interleaved { channel, payload })) => {
                    return Ok(Incoming::Frame(channel, payload))
                }
                Ok(Some(Item::Response(r))) => return Ok(Incoming::Response(r)),
                // A camera's request (some send GET_PARAMETER or ANNOUNCE): not answered.
                Ok(Some(Item::Request(_))) => {}
                Ok(None) => {}
                Err(e) => return Err(PullError::Connection(format!("bad message: {e}"))),
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| PullError::Connection(e.to_string()))?;
            if n == 0 {
                return Err(PullError::Connection(
                    "the camera closed the connection".into(),
                ));
            }
        }
    }

    /// Writes an interleaved frame (our RTCP receiver reports).
    pub(crate) async fn write_frame(&mut self, channel: u8, data: &[u8]) -> Result<(), PullError> {
        let Some(h) = finch_proto::rtsp::write_interleaved_header(channel, data.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(4 + data.len());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        self.io
            .write_all(&out)
            .await
            .map_err(|e| PullError::Connection(e.to_string()))
    }
}

/// Cameras serve self-signed certificates almost always: the TLS connection is encrypted but
/// the certificate's chain is not checked (as ffmpeg's default, `tls_verify=0`). The
/// handshake's signatures still are.
fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // The default protocol versions are always available with ring.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))))
                .with_no_client_auth(),
        ),
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
