//! A minimal HTTP/1.1 client for readiness probes and health checks (loopback only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Connection: close`, waiting at most `timeout` for each step. Errors say
/// what happened in words ("timed out after 10 s", "connection refused: nothing listens on
/// …"), not as an OS error number.
pub fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    exchange(&addr, host, path, timeout).map_err(|e| in_words(e, addr, timeout))
}

fn in_words(e: std::io::Error, addr: SocketAddr, timeout: Duration) -> std::io::Error {
    use std::io::ErrorKind;
    let kind = e.kind();
    let text = match kind {
        // A read or write timeout on a socket is EAGAIN ("os error 11") on Linux.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out after {}", seconds(timeout)),
        ErrorKind::ConnectionRefused => format!("connection refused: nothing listens on {addr}"),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "the connection was closed without an answer".to_string()
        }
        ErrorKind::UnexpectedEof => "the connection was closed before a complete answer".to_string(),
        _ => return e,
    };
    std::io::Error::new(kind, text)
}

/// `10 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Where a health request goes: the public address, or a backend's own unix socket (speaking
/// HTTP, or uWSGI's protocol behind nginx's `uwsgi_pass`).
#[derive(Debug, Clone)]
pub enum Via {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
    Uwsgi(std::path::PathBuf),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Tcp(a) => write!(f, "{a}"),
            Via::Unix(p) | Via::Uwsgi(p) => write!(f, "{}", p.display()),
        }
    }
}

/// [`get`] through `via`.
pub fn get_via(via: &Via, host: &str, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let result = match via {
        Via::Tcp(addr) => exchange(addr, host, path, timeout),
        Via::Unix(p) => std::os::unix::net::UnixStream::connect(p).and_then(|s| {
            let request = http_request(host, path);
            read_reply(s, request.as_bytes(), timeout)
        }),
        Via::Uwsgi(p) => std::os::unix::net::UnixStream::connect(p).and_then(|s| {
            let packet = uwsgi_packet(host, path)?;
            read_reply(s, &packet, timeout)
        }),
    };
    match via {
        Via::Tcp(addr) => result.map_err(|e| in_words(e, *addr, timeout)),
        _ => result.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                std::io::Error::new(e.kind(), format!("nothing listens on {via}"))
            }
            _ => in_words(e, SocketAddr::from(([127, 0, 0, 1], 0)), timeout),
        }),
    }
}

fn http_request(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: deployctl-up\r\n\r\n")
}

/// A uwsgi-protocol request as nginx's `uwsgi_pass` sends it: a 4-byte header (modifier 0,
/// the size of the variables, little-endian) and the variables, each `len key len value`.
fn uwsgi_packet(host: &str, target: &str) -> std::io::Result<Vec<u8>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => (n, p),
        _ => (host, "80"),
    };
    let vars = [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", target),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("SERVER_NAME", name),
        ("SERVER_PORT", port),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", host),
        ("HTTP_USER_AGENT", "deployctl-up"),
    ];
    let mut body = Vec::new();
    for (k, v) in vars {
        for part in [k.as_bytes(), v.as_bytes()] {
            let len = u16::try_from(part.len()).map_err(|_| std::io::Error::other("uwsgi variable too long"))?;
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(part);
        }
    }
    let size = u16::try_from(body.len()).map_err(|_| std::io::Error::other("uwsgi request too long"))?;
    let mut packet = vec![0u8];
    packet.extend_from_slice(&size.to_le_bytes());
    packet.push(0);
    packet.extend(body);
    Ok(packet)
}

/// [`get`] over TLS, for `sni` (the front refuses a handshake without a name it serves). The
/// certificate is not verified: this asks our own front on loopback whether it serves, not
/// who it is (it may be a placeholder or a self-signed pair).
pub fn get_tls(addr: SocketAddr, sni: &str, host: &str, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let tls = (|| {
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
        let conn = rustls::ClientConnection::new(any_certificate()?, name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        read_reply(
            rustls::StreamOwned::new(conn, tcp),
            http_request(host, path).as_bytes(),
            timeout,
        )
    })();
    tls.map_err(|e| in_words(e, addr, timeout))
}

/// A client configuration accepting any server certificate (signatures still checked).
fn any_certificate() -> std::io::Result<std::sync::Arc<rustls::ClientConfig>> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = std::sync::Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Stream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn timeouts(&self, d: Duration) -> std::io::Result<()> {
        self.sock.timeouts(d)
    }
}

fn exchange(addr: &SocketAddr, host: &str, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let s = TcpStream::connect_timeout(addr, timeout)?;
    read_reply(s, http_request(host, path).as_bytes(), timeout)
}

/// The socket operations a health request needs, for TCP and unix streams alike.
trait Stream: Read + Write {
    fn timeouts(&self, d: Duration) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn timeouts(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Stream for std::os::unix::net::UnixStream {
    fn timeouts(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

/// Send `request`, read the answer to its end within `timeout`, waking every 100 ms to give
/// up at once when `up` is asked to stop.
fn read_reply(mut s: impl Stream, request: &[u8], timeout: Duration) -> std::io::Result<Reply> {
    let deadline = std::time::Instant::now() + timeout;
    s.timeouts(timeout.min(Duration::from_millis(100)))?;
    let mut raw = Vec::new();
    let mut written = 0;
    let mut buf = [0u8; 16384];
    loop {
        let step = if written < request.len() {
            s.write(&request[written..]).map(|n| {
                written += n;
            })
        } else {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match step {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if super::interrupt::stop_requested().is_some() {
                    return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        if raw.is_empty() {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer")
        } else {
            std::io::Error::other("no complete HTTP response head")
        }
    })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}
