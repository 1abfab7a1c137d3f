//! TLS termination with rustls (`--certfile`, `--keyfile`, `--tls-profile`): the server's
//! configuration made from the pair and the profile, and one connection's TLS state driven on
//! a non-blocking socket.
//!
//! The profile is Mozilla's server-side TLS 6.0, as the CLI's `tls` module renders it for
//! nginx: `intermediate` is TLS 1.2 and 1.3, `modern` TLS 1.3 only; TLS 1.2 only with the
//! guideline's ECDHE-ECDSA/ECDHE-RSA AES-GCM and ChaCha20-Poly1305 suites (which are the only
//! TLS 1.2 suites rustls has: no CBC, no RSA key exchange, no DHE); groups X25519, P-256,
//! P-384; the server's cipher order (as on the fronts, see `config`); ALPN
//! `http/1.1`. No session tickets and no session cache (`NoServerSessionStorage`, no TLS 1.3
//! tickets), as on the fronts: every handshake is full, and nothing secret outlives a worker.
//! The crypto provider is `ring`, the one already in the workspace's lock tree.
//!
//! Owns: reading the pair (errors name the file; a leaf certificate outside its validity
//! period is refused, as `up` refuses it for the fronts), the `ServerConfig`, and [`Tls`], the
//! connection's state machine over a socket (`read_tls`/`process_new_packets`/`write_tls`).
//! Does not own: when a connection reads or writes (`event_loop`, `conn`), nor the bytes of a
//! response (`http::outbox`, which writes through [`Tls::write_outbox`]).

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use deployctl_common::settings::TlsFiles;
use deployctl_common::spec::TlsProfile;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::{ServerConfig, ServerConnection};

/// The intermediate profile's TLS 1.2 suites, in its order, from the list the fronts' OpenSSL
/// configuration is made of (`deployctl_common::tls_suites`), found by IANA name in ring's.
fn intermediate_tls12() -> anyhow::Result<Vec<rustls::SupportedCipherSuite>> {
    deployctl_common::tls_suites::INTERMEDIATE_TLS12
        .iter()
        .map(|s| {
            provider::ALL_CIPHER_SUITES
                .iter()
                .find(|c| c.suite().as_str() == Some(s.iana))
                .copied()
                .with_context(|| format!("rustls (ring) has no TLS 1.2 suite {}", s.iana))
        })
        .collect()
}

/// The server's TLS configuration from the pair and the profile; errors name the file.
pub fn config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(&files.certfile)?;
    let key = PrivateKeyDer::from_pem_file(&files.keyfile)
        .map_err(|e| anyhow::anyhow!("{}: {}", files.keyfile.display(), pem_error(e)))
        .context("--keyfile: cannot read the private key")?;
    let mut suites = vec![
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    match files.profile {
        TlsProfile::Intermediate => suites.extend(intermediate_tls12()?),
        TlsProfile::Modern => {}
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match files.profile {
        TlsProfile::Intermediate => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsProfile::Modern => &[&rustls::version::TLS13],
    };
    let crypto = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        kx_groups: vec![
            provider::kx_group::X25519,
            provider::kx_group::SECP256R1,
            provider::kx_group::SECP384R1,
        ],
        ..provider::default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(versions)
        .context("the TLS profile")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                "{} does not match the certificate in {}",
                files.keyfile.display(),
                files.certfile.display()
            ),
            e => anyhow::anyhow!("{} with {}: {e}", files.certfile.display(), files.keyfile.display()),
        })
        .context("--certfile/--keyfile: cannot use the pair")?;
    // The server's order (the list above, AES-GCM first), as the fronts have it: the guideline
    // says no preference, but testssl grades a server without an order HIGH. (OpenSSL's
    // PrioritizeChaCha, which the fronts add, has no rustls equivalent: a client that prefers
    // ChaCha20 gets AES-GCM unless it offers only ChaCha20.)
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), pem_error(e)))
        .context("--certfile: cannot read the certificate chain")?;
    if certs.is_empty() {
        anyhow::bail!("--certfile: {} holds no PEM certificate", path.display());
    }
    check_validity(path, &certs[0], now_unix())?;
    Ok(certs)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The leaf certificate is valid at `now` (Unix seconds): an expired or not yet valid one is
/// an error naming the file, as the fronts' check in `up` has it (rustls would serve it, and
/// every client would refuse the handshake).
fn check_validity(path: &Path, leaf: &CertificateDer<'_>, now: i64) -> anyhow::Result<()> {
    let (not_before, not_after) = validity(leaf).with_context(|| {
        format!(
            "--certfile: {}: the first certificate has no readable validity period",
            path.display()
        )
    })?;
    if not_after.unix() < now {
        anyhow::bail!("--certfile: {}: the certificate expired on {not_after}", path.display());
    }
    if not_before.unix() > now {
        anyhow::bail!(
            "--certfile: {}: the certificate is not valid before {not_before}",
            path.display()
        );
    }
    Ok(())
}

/// A time of a certificate's validity (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CertTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl CertTime {
    /// Seconds since the Unix epoch (days from the civil date: H. Hinnant's algorithm).
    fn unix(&self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = if m <= 2 { self.year - 1 } else { self.year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
    }
}

impl std::fmt::Display for CertTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// One DER element: (tag, contents, what follows), or `None` when it does not parse.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The certificate's validity period (RFC 5280 §4.1: `Certificate` → `TBSCertificate` →
/// optional `[0] version`, `serialNumber`, `signature`, `issuer`, then `validity`). The
/// server does not carry an X.509 parser (tests/crates.rs), and this is all it reads.
fn validity(cert: &[u8]) -> Option<(CertTime, CertTime)> {
    let (0x30, cert, _) = der(cert)? else { return None };
    let (0x30, tbs, _) = der(cert)? else { return None };
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        let (0x02, _, r) = der(rest)? else { return None };
        rest = r;
    } else if tag != 0x02 {
        return None;
    }
    // signature, issuer
    for _ in 0..2 {
        let (0x30, _, r) = der(rest)? else { return None };
        rest = r;
    }
    let (0x30, validity, _) = der(rest)? else { return None };
    let (t1, v1, rest) = der(validity)?;
    let (t2, v2, _) = der(rest)?;
    Some((cert_time(t1, v1)?, cert_time(t2, v2)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 §4.1.2.5 allows.
fn cert_time(tag: u8, v: &[u8]) -> Option<CertTime> {
    let text = std::str::from_utf8(v).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    let t = CertTime {
        year,
        month: n(0)?,
        day: n(2)?,
        hour: n(4)?,
        minute: n(6)?,
        second: n(8)?,
    };
    ((1..=12).contains(&t.month) && (1..=31).contains(&t.day) && t.hour < 24 && t.minute < 60 && t.second < 61)
        .then_some(t)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind found".into(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// One connection's TLS state. Every method works without blocking: socket reads and writes
/// that would block end the call, and the event loop (or a thread with `poll`) comes back.
pub struct Tls {
    conn: ServerConnection,
    /// The socket reported EOF (or an error) on a read.
    eof: bool,
}

/// The socket as `io::Read`/`io::Write` for rustls (`send` with `MSG_NOSIGNAL`: a peer that
/// went away is `EPIPE`, not a SIGPIPE).
struct Sock(RawFd);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reading into a valid, writable slice of the given length.
            let r = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for Sock {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: sending from a valid slice.
            let r = unsafe { libc::send(self.0, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Tls> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Tls { conn, eof: false })
    }

    /// Encrypted bytes wait for the socket (a handshake flight, a record, an alert).
    pub fn pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Write what rustls has for the socket. `Ok(true)` when all is out, `Ok(false)` when the
    /// socket is full.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Sock(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Read decrypted bytes onto the end of `buf`: one socket read of records, processed, the
    /// answer rustls has (a handshake flight, an alert) sent, and everything decrypted taken
    /// (rustls says how much), so no plaintext is ever left inside rustls where epoll cannot
    /// see it. Records that bring no plaintext (the handshake) are followed by the next socket
    /// read. `Ok(0)` is the end (close_notify, or EOF, with or without close_notify, which for
    /// HTTP/1.1 framing is the same); `WouldBlock` when the socket has nothing more. `_want`
    /// is the plain socket's read size; here a read takes what one record batch decrypts to.
    pub fn read_some(&mut self, fd: RawFd, buf: &mut Vec<u8>, _want: usize) -> io::Result<usize> {
        loop {
            if self.eof {
                return Ok(0);
            }
            let mut socket_eof = false;
            match self.conn.read_tls(&mut Sock(fd)) {
                Ok(0) => socket_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush(fd)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert rustls queued for the peer, then the connection ends.
                    let _ = self.flush(fd);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            // A handshake flight the socket does not take now waits in rustls: `pending`
            // makes the loop wait for EPOLLOUT, and the client answers only once it has it.
            self.flush(fd)?;
            // The end is seen after what came before it: this call returns the last bytes,
            // the next one `Ok(0)`.
            if state.peer_has_closed() || socket_eof {
                self.eof = true;
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let len = buf.len();
                buf.resize(len + n, 0);
                let mut got = 0;
                while got < n {
                    match self.conn.reader().read(&mut buf[len + got..]) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            buf.truncate(len + got);
                            return Err(e);
                        }
                    }
                }
                buf.truncate(len + got);
                if got > 0 {
                    return Ok(got);
                }
            }
        }
    }

    /// Give rustls up to `data.len()` bytes to encrypt, as much as its send buffer takes.
    pub fn write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// Send close_notify (as far as the socket takes it now: a close does not wait for it).
    pub fn close_notify(&mut self, fd: RawFd) {
        self.conn.send_close_notify();
        let _ = self.flush(fd);
    }
}

#[cfg(test)]
mod tests {
    /// Every suite of the shared list is one rustls has, found in the list's order: the
    /// embedded server offers exactly what the fronts' `ssl_ciphers` says.
    #[test]
    fn the_shared_tls12_list_maps_onto_rustls() {
        let suites = super::intermediate_tls12().unwrap();
        let names: Vec<&str> = suites.iter().filter_map(|s| s.suite().as_str()).collect();
        let want: Vec<&str> = deployctl_common::tls_suites::INTERMEDIATE_TLS12
            .iter()
            .map(|s| s.iana)
            .collect();
        assert_eq!(names, want);
        assert!(suites.iter().all(|s| s.version() == &rustls::version::TLS12));
    }

    /// Both time forms, and the epoch arithmetic against known instants.
    #[test]
    fn certificate_times_read_as_utc() {
        let t = super::cert_time(0x17, b"491231235959Z").unwrap();
        assert_eq!(t.to_string(), "2049-12-31 23:59:59 UTC");
        let t = super::cert_time(0x17, b"700101000000Z").unwrap();
        assert_eq!(t.unix(), 0);
        let t = super::cert_time(0x18, b"20000301000000Z").unwrap();
        assert_eq!(t.unix(), 951_868_800);
        assert!(super::cert_time(0x18, b"20001301000000Z").is_none());
        assert!(super::cert_time(0x17, b"2000010100Z").is_none());
    }
}
