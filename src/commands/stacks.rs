//! `deployctl status`, `logs` and `down`: the stacks that `up --detach` left running, found
//! through their state files under `.deployctl/` (or `--run-dir`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{LogsArgs, RunArgs};
use crate::commands::{Status, run_root};
use crate::orchestrate::health;
use crate::orchestrate::state::{self, State};
use crate::printer::{Printer, hinted};
use crate::spec::display_path;

/// The project's directory, absolute: messages name it as a path the user can recognise
/// from anywhere (not `.`).
fn project_dir(args: &RunArgs) -> PathBuf {
    let dir = args.spec.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    std::path::absolute(&dir).map(|d| normalize(&d)).unwrap_or(dir)
}

/// `/a/./b/..` → `/a`, without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn root(args: &RunArgs) -> PathBuf {
    run_root(&project_dir(args), args.run_dir.dir.as_deref())
}

/// The selected stacks' run directories with their states; stale ones (supervisor and every
/// component gone) are reported, cleaned and left out.
fn stacks(args: &RunArgs, printer: &Printer) -> Vec<(PathBuf, State)> {
    let mut out = Vec::new();
    for dir in state::run_dirs(&root(args)) {
        let Some(st) = State::read(&dir) else { continue };
        if args.target.as_deref().is_some_and(|t| t != st.target) {
            continue;
        }
        let anything = state::alive(st.supervisor) || st.components.iter().any(|c| state::alive(c.pid));
        if !anything {
            printer.warn(&format!(
                "{}: stale state file (supervisor {} and its components are gone); removed",
                st.target, st.supervisor
            ));
            State::remove(&dir);
            continue;
        }
        out.push((dir, st));
    }
    out
}

fn none_running(args: &RunArgs) -> anyhow::Error {
    let what = match &args.target {
        Some(t) => format!("no `{t}` stack"),
        None => "no stack".to_string(),
    };
    let place = match &args.run_dir.dir {
        Some(_) => format!(" in {}", root(args).display()),
        None => String::new(),
    };
    let run_dir = match &args.run_dir.dir {
        Some(d) => format!(" --run-dir {}", super::shell_word(&d.display().to_string())),
        None => String::new(),
    };
    hinted(
        format!("{what} of {}{place} is running", project_dir(args).display()),
        format!("start one with `deployctl up --detach{run_dir}`"),
    )
}

/// `--target` of status/logs/down must name a target (exit 2 otherwise).
fn check_target(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(t) = &args.target {
        super::target_arg(t)?;
    }
    Ok(())
}

/// The address to connect to and the `Host` to send for a URL that `up` printed
/// (`http://127.0.0.1:8000/`, `http://[::1]:8000/`, `http://localhost/`).
fn url_address(url: &str) -> Option<(std::net::SocketAddr, String)> {
    let authority = url.strip_prefix("http://")?.split('/').next()?.to_string();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority.as_str(), 80),
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Some((std::net::SocketAddr::new(ip, port), authority))
}

pub fn status(args: &RunArgs, printer: &Printer) -> anyhow::Result<Status> {
    check_target(args)?;
    let found = stacks(args, printer);
    if found.is_empty() {
        return Err(none_running(args));
    }
    let mut healthy = true;
    for (_, st) in &found {
        let supervised = state::alive(st.supervisor);
        let health = url_address(&st.url)
            .map(
                |(addr, authority)| match health::get(addr, &authority, &st.health_path, Duration::from_secs(5)) {
                    Ok(r) => {
                        let ok = match st.health_expect {
                            Some(e) => r.status == e,
                            None => r.status < 500,
                        };
                        (ok, r.status.to_string())
                    }
                    Err(e) => (false, format!("no answer ({e})")),
                },
            )
            .unwrap_or_else(|| (false, "unknown".into()));
        let (health_ok, health) = health;
        healthy &= supervised && health_ok;
        println!("{}  {}  health GET {} → {health}", st.target, st.url, st.health_path);
        println!(
            "  supervisor  {:>7}  {}",
            st.supervisor,
            if supervised { "running" } else { "gone" }
        );
        for c in &st.components {
            let alive = state::alive(c.pid);
            healthy &= alive;
            println!(
                "  {:<10}  {:>7}  {}",
                c.name,
                c.pid,
                if alive { "running" } else { "gone" }
            );
        }
    }
    Ok(if healthy { Status::Success } else { Status::Failed })
}

pub fn logs(args: &LogsArgs, printer: &Printer) -> anyhow::Result<Status> {
    check_target(&args.run)?;
    let found = stacks(&args.run, printer);
    let Some((dir, st)) = found.first() else {
        return Err(none_running(&args.run));
    };
    let path = dir.join(state::LOG);
    let mut file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", display_path(&path)))?;
    let mut out = std::io::stdout();
    std::io::copy(&mut file, &mut out)?;
    if args.follow {
        // Until the supervisor is gone (or Ctrl-C).
        let mut pos = file.stream_position()?;
        while state::alive(st.supervisor) {
            std::thread::sleep(Duration::from_millis(200));
            file.seek(SeekFrom::Start(pos))?;
            let mut chunk = Vec::new();
            file.read_to_end(&mut chunk)?;
            out.write_all(&chunk)?;
            out.flush()?;
            pos += chunk.len() as u64;
        }
    }
    Ok(Status::Success)
}

pub fn down(args: &RunArgs, printer: &Printer) -> anyhow::Result<Status> {
    check_target(args)?;
    let found = stacks(args, printer);
    if found.is_empty() {
        return Err(none_running(args));
    }
    for (dir, st) in found {
        if state::alive(st.supervisor) {
            // The supervisor stops its components in reverse order and removes the state file.
            // SAFETY: signalling the supervisor recorded in our own state file.
            unsafe { libc::kill(st.supervisor as i32, libc::SIGTERM) };
        } else {
            // Orphans (the supervisor was killed): stop each component's process group.
            for c in st.components.iter().rev() {
                // SAFETY: each component leads its own process group.
                unsafe { libc::kill(-(c.pid as i32), libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let all = |st: &State| state::alive(st.supervisor) || st.components.iter().any(|c| state::alive(c.pid));
        while all(&st) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if all(&st) {
            for c in &st.components {
                // SAFETY: as above.
                unsafe { libc::kill(-(c.pid as i32), libc::SIGKILL) };
            }
        }
        State::remove(&dir);
        printer.status("stopped", &format!("{} ({})", st.target, st.url));
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::url_address;

    #[test]
    fn url_address_of_printed_urls() {
        let (a, h) = url_address("http://127.0.0.1:8000/").unwrap();
        assert_eq!((a.to_string(), h.as_str()), ("127.0.0.1:8000".into(), "127.0.0.1:8000"));
        let (a, h) = url_address("http://[::1]:8000/").unwrap();
        assert_eq!((a.to_string(), h.as_str()), ("[::1]:8000".into(), "[::1]:8000"));
        let (a, h) = url_address("http://localhost/").unwrap();
        assert_eq!((a.to_string(), h.as_str()), ("127.0.0.1:80".into(), "localhost"));
        let (a, _) = url_address("http://[::1]/").unwrap();
        assert_eq!(a.to_string(), "[::1]:80");
    }
}
