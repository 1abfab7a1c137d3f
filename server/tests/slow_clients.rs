//! Slow and hostile clients against the one-thread event loop (`--threads 1`, the default):
//! a client that trickles its body or never reads its response must cost a buffer, not the
//! worker, and is cut by the transfer's deadline (no byte for `--body-timeout`, or slower on
//! average than `--min-rate`); a flood of huge request heads is answered 503 past the worker's
//! head-memory cap. (The figures — how much other clients are delayed, memory after a flood —
//! are measured by `bench/slow_clients.sh` and `bench/head_flood.sh`.)

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server;

/// A connection whose receive buffer is tiny, so the server's writes stall quickly.
fn small_window(addr: &str) -> TcpStream {
    let sock = socket2_free_connect(addr);
    sock.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    sock
}

/// `connect` after shrinking SO_RCVBUF (it must be set before the handshake to limit the
/// window the peer sees).
fn socket2_free_connect(addr: &str) -> TcpStream {
    let target: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream built from it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: target.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(target.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }
}

/// What a client sees within a wait: a response's status, the connection ended (closed or
/// reset) without one, or nothing yet.
#[derive(Debug, PartialEq)]
enum Seen {
    Status(u16),
    Ended,
    Nothing,
}

fn seen_within(stream: &mut TcpStream, wait: Duration) -> Seen {
    if stream.set_read_timeout(Some(wait)).is_err() {
        return Seen::Ended;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match std::io::Read::read(stream, &mut head[got..]) {
            Ok(0) => return Seen::Ended,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if got == 0 {
                    return Seen::Nothing;
                }
                break;
            }
            Err(_) => return Seen::Ended,
            Ok(n) => got += n,
        }
    }
    match std::str::from_utf8(&head[9..]).ok().and_then(|c| c.parse().ok()) {
        Some(code) => Seen::Status(code),
        None => Seen::Ended,
    }
}

/// Requests on fresh connections for `secs`; the slowest answer and how many failed.
fn probe(s: &common::Server, secs: u64) -> (Duration, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut slowest, mut ok, mut failed) = (Duration::ZERO, 0, 0);
    while Instant::now() < deadline && ok + failed < 500 {
        let started = Instant::now();
        let mut c = s.connect();
        c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        match c.try_response_to(false) {
            Some(r) if r.status == 200 => ok += 1,
            _ => failed += 1,
        }
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    (slowest, ok, failed)
}

#[test]
fn a_client_that_never_reads_a_large_response_does_not_hold_the_worker() {
    // What broke: the one-thread worker wrote responses blocking, so a client that did not
    // read a large response held every other client of the worker for --body-timeout.
    let s = server("apps:app").args(&["--body-timeout", "3"]).start();
    let mut stalled = small_window(&s.addr);
    // 100 MiB, streamed by a generator; never read.
    stalled
        .write_all(b"GET /stream?n=1600 HTTP/1.1\r\nHost: h\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let (slowest, ok, failed) = probe(&s, 2);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok >= 10);
    assert!(
        slowest < Duration::from_millis(1500),
        "another client waited {slowest:?} behind the stalled one"
    );
    // The stalled transfer is cut after --body-timeout without progress: what reaches the
    // client afterwards is what was in the socket buffers, then the end.
    std::thread::sleep(Duration::from_secs(4));
    stalled.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    let ended = loop {
        match std::io::Read::read(&mut stalled, &mut buf) {
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
            Ok(n) => total += n,
        }
    };
    assert!(ended, "the stalled response is still open after {total} bytes");
    assert!(total < 100 << 20, "the whole response arrived");
}

#[test]
fn a_trickled_upload_does_not_hold_the_worker_and_is_cut_by_the_minimum_rate() {
    // What broke: `--body-timeout` was per read, so one byte a second was never cut, and the
    // one-thread worker waited for it.
    let s = server("apps:app")
        .args(&["--body-timeout", "2", "--min-rate", "1k"])
        .start();
    let mut trickle = s.connect();
    let started = Instant::now();
    let writer = {
        let mut stream = trickle.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            let _ = stream.write_all(b"POST /echo?mode=read HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n");
            for _ in 0..100 {
                // Ten bytes a second: progress every read, so only the rate rule cuts it.
                if stream.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (slowest, ok, failed) = probe(&s, 2);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok >= 10);
    assert!(
        slowest < Duration::from_millis(1500),
        "another client waited {slowest:?}"
    );
    let r = trickle.response();
    assert_eq!(r.status, 408, "{}", r.text());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
    drop(trickle);
    let _ = writer.join();
}

#[test]
fn a_flood_of_huge_heads_is_answered_503_past_the_memory_cap() {
    // Heads of ~700 KiB are legal with these limits; 60 of them are above the 32 MiB a worker
    // buffers for request heads.
    let s = server("apps:app")
        .args(&["--limit-request-fields", "200", "--header-timeout", "30"])
        .start();
    let field = format!("X-Filler: {}\r\n", "a".repeat(8000));
    let part = field.repeat(88); // ~700 KiB, head not finished
    let mut flood = Vec::new();
    let mut busy = 0;
    for _ in 0..60 {
        let mut c = s.connect();
        c.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\n");
        if c.stream.write_all(part.as_bytes()).is_err() {
            busy += 1; // refused (and reset) while sending
            continue;
        }
        flood.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    // A new client past the cap is told the server is busy rather than growing its memory
    // further (unless earlier refusals brought the worker back under it).
    let mut late = s.connect();
    late.send(b"GET /status?code=200 HTTP/1.1\r\nHost: h\r\n");
    let _ = late.stream.write_all(part.as_bytes());
    if seen_within(&mut late.stream, Duration::from_millis(500)) == Seen::Status(503) {
        busy += 1;
    }
    // Some of the flood were answered 503 too; the rest complete normally.
    let mut served = 0;
    for (n, c) in flood.iter_mut().enumerate() {
        // A refused one may be reset by now (its write or read fails): counted as refused.
        let _ = c.stream.write_all(b"\r\n");
        match seen_within(&mut c.stream, Duration::from_secs(10)) {
            Seen::Status(200) => served += 1,
            Seen::Status(503) | Seen::Ended => busy += 1,
            other => panic!("client {n}: {other:?}\n{}", s.log()),
        }
    }
    assert!(busy > 0, "nothing refused");
    assert!(served > 0, "nothing served");
    assert!(served * 700 < 40 * 1024, "{served} heads of 700 KiB buffered at once");
    drop(flood);
    // And the worker serves normally afterwards.
    assert_eq!(s.get("/status?code=200").status, 200);
}

#[test]
fn a_flood_of_slow_bodies_is_answered_503_past_the_memory_cap() {
    // Bodies read ahead by the loop count against the same cap as heads: 40 uploads of 1 MiB
    // stalled just before their end would otherwise hold 40 MiB.
    let s = server("apps:app").args(&["--body-timeout", "30"]).start();
    let body = vec![b'x'; 900 * 1024];
    let mut flood = Vec::new();
    let mut busy = 0;
    for _ in 0..40 {
        let mut c = s.connect();
        c.send(b"POST /echo?mode=len HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n");
        if c.stream.write_all(&body).is_err() {
            busy += 1;
            continue;
        }
        flood.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut flood {
        // Answered already (503), or still waiting for the rest of its body.
        match seen_within(&mut c.stream, Duration::from_millis(200)) {
            Seen::Nothing => {}
            Seen::Status(503) | Seen::Ended => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0, "40 MiB of bodies buffered without a 503");
    assert!(busy < 40, "everything refused");
    drop(flood);
    assert_eq!(s.get("/status?code=200").status, 200);
}

#[test]
fn with_python_threads_clients_that_never_read_do_not_take_the_threads() {
    // What broke: a pool thread wrote its response blocking, so as many non-reading clients
    // as threads stopped the worker.
    let s = server("apps:app")
        .args(&["--threads", "2", "--body-timeout", "30"])
        .start();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut c = small_window(&s.addr);
        c.write_all(b"GET /stream?n=1600 HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("send");
        stalled.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (slowest, ok, failed) = probe(&s, 2);
    assert_eq!(failed, 0, "{}", s.log());
    assert!(ok >= 10);
    assert!(
        slowest < Duration::from_millis(1500),
        "another client waited {slowest:?}"
    );
    drop(stalled);
}
