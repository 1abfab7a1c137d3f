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
    exchange(addr, host, path, timeout).map_err(|e| in_words(e, addr, timeout))
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

fn exchange(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: deployctl-up\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
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
