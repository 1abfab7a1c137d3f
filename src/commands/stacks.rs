//! `deployctl status`, `logs` and `down`: the stacks that `up --detach` left running, found
//! through their state files under `.deployctl/` (or `--run-dir`).
//!
//! Every process named by a state file is checked by its start time before it is listed as
//! running or signalled ([`crate::orchestrate::procs`]); a stack whose supervisor was killed
//! is listed as orphaned and stopped by `down` group by group.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{LogsArgs, RunArgs, StatusArgs};
use crate::commands::{Status, down_command, run_root};
use crate::orchestrate::health;
use crate::orchestrate::procs::{self, ProcId};
use crate::orchestrate::state::{self, Condition, Found, Liveness, Phase, State};
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

/// A recorded stack and what of it runs.
struct Stack {
    dir: PathBuf,
    state: State,
    live: Liveness,
}

/// The selected stacks' run directories with their states, stale ones included (their state
/// files are removed here, with a warning); state files that cannot be checked are reported
/// and removed, never acted on.
fn stacks(args: &RunArgs, printer: &Printer) -> Vec<Stack> {
    let mut out = Vec::new();
    for dir in state::run_dirs(&root(args)) {
        let st = match State::read(&dir) {
            None => continue,
            Some(Found::State(st)) => st,
            Some(Found::Unverifiable { pids, why }) => {
                let existing: Vec<String> = pids
                    .iter()
                    .filter(|(_, p)| procs::stat(*p).is_some())
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect();
                let path = dir.join(state::FILE);
                let msg = format!(
                    "{}: {why}, so its PIDs cannot be told from reused ones; nothing was signalled and the file \
                     was removed",
                    display_path(&path)
                );
                if existing.is_empty() {
                    printer.warn(&msg);
                } else {
                    printer.warn(&format!(
                        "{msg}\nhint: processes with its PIDs exist ({}): if they are that stack, stop them by PID",
                        existing.join(", ")
                    ));
                }
                State::remove(&dir);
                continue;
            }
        };
        if args.target.as_deref().is_some_and(|t| t != st.target) {
            continue;
        }
        let live = st.inspect();
        if live.condition() == Condition::Stale {
            printer.warn(&format!(
                "{}: stale state file (supervisor {} and its components are gone, or their PIDs now belong to \
                 other processes); removed",
                st.target, st.supervisor.pid
            ));
            State::remove(&dir);
        }
        out.push(Stack { dir, state: st, live });
    }
    out
}

fn none_running_message(args: &RunArgs) -> String {
    let what = match &args.target {
        Some(t) => format!("no `{t}` stack"),
        None => "no stack".to_string(),
    };
    let place = match &args.run_dir.dir {
        Some(_) => format!(" in {}", root(args).display()),
        None => String::new(),
    };
    format!("{what} of {}{place} is running", project_dir(args).display())
}

fn none_running(args: &RunArgs) -> anyhow::Error {
    let run_dir = match &args.run_dir.dir {
        Some(d) => format!(" --run-dir {}", super::shell_word(&d.display().to_string())),
        None => String::new(),
    };
    hinted(
        none_running_message(args),
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
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split('/').next()?.to_string();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority.as_str(), default_port),
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Some((std::net::SocketAddr::new(ip, port), authority))
}

/// `status --json`: one object; see the README for the schema.
#[derive(Serialize)]
struct StatusJson {
    project: String,
    run_dir: String,
    stacks: Vec<StackJson>,
}

#[derive(Serialize)]
struct StackJson {
    target: String,
    url: String,
    /// `running` (supervised), `starting` (supervised, not healthy yet), `orphaned`
    /// (supervisor gone, processes left) or `stale` (nothing left).
    state: &'static str,
    /// Supervised, every component running, health as expected.
    healthy: bool,
    supervisor: SupervisorJson,
    components: Vec<ComponentJson>,
    /// Processes left in a killed detached supervisor's session outside the components'
    /// groups (a component it was starting, a pip install).
    unrecorded: Vec<u32>,
    /// `None` for a stale stack (its port may belong to someone else by now).
    health: Option<HealthJson>,
}

#[derive(Serialize)]
struct SupervisorJson {
    pid: u32,
    alive: bool,
}

#[derive(Serialize)]
struct ComponentJson {
    name: String,
    pid: u32,
    alive: bool,
    restarts: u32,
    pgid: u32,
    /// Every live process of its group, the main process first.
    processes: Vec<u32>,
}

#[derive(Serialize)]
struct HealthJson {
    path: String,
    /// The status it answered; `None` when it did not answer.
    status: Option<u16>,
    /// How long the answer took (or the attempt, when none came).
    ms: u64,
    ok: bool,
    /// Why there was no answer.
    error: Option<String>,
}

/// `GET path` at `addr`, over TLS for an `https://` URL (with the URL's host as the name
/// asked for: `up` prints `https://localhost:PORT/`).
fn get(url: &str, addr: std::net::SocketAddr, authority: &str, path: &str) -> std::io::Result<health::Reply> {
    let t = Duration::from_secs(5);
    if url.starts_with("https://") {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        health::get_tls(addr, host, authority, path, t)
    } else {
        health::get(addr, authority, path, t)
    }
}

/// `GET [health].path` through the URL `up` printed.
fn check_health(st: &State) -> HealthJson {
    let started = Instant::now();
    let (status, error) = match url_address(&st.url) {
        Some((addr, authority)) => match get(&st.url, addr, &authority, &st.health_path) {
            Ok(r) => (Some(r.status), None),
            Err(e) => (None, Some(format!("no answer ({e})"))),
        },
        None => (None, Some(format!("cannot tell the address of {}", st.url))),
    };
    let ok = status.is_some_and(|s| match st.health_expect {
        Some(e) => s == e,
        None => s < 500,
    });
    HealthJson {
        path: st.health_path.clone(),
        status,
        ms: started.elapsed().as_millis() as u64,
        ok,
        error,
    }
}

fn stack_json(s: &Stack) -> StackJson {
    let condition = s.live.condition();
    let health = (condition != Condition::Stale).then(|| check_health(&s.state));
    let all_alive = s.live.components.iter().all(|c| c.alive);
    StackJson {
        target: s.state.target.clone(),
        url: s.state.url.clone(),
        state: match condition {
            Condition::Supervised if s.state.phase == Phase::Starting => "starting",
            Condition::Supervised => "running",
            Condition::Orphaned => "orphaned",
            Condition::Stale => "stale",
        },
        healthy: condition == Condition::Supervised
            && s.state.phase == Phase::Running
            && all_alive
            && health.as_ref().is_some_and(|h| h.ok),
        supervisor: SupervisorJson {
            pid: s.state.supervisor.pid,
            alive: s.live.supervisor,
        },
        components: s
            .state
            .components
            .iter()
            .zip(&s.live.components)
            .map(|(c, l)| ComponentJson {
                name: c.name.clone(),
                pid: c.process.pid,
                alive: l.alive,
                restarts: c.restarts,
                pgid: c.pgid,
                processes: l.members.iter().map(|p| p.pid).collect(),
            })
            .collect(),
        unrecorded: s.live.unrecorded.iter().map(|p| p.pid).collect(),
        health,
    }
}

pub fn status(args: &StatusArgs, printer: &Printer) -> anyhow::Result<Status> {
    let run = &args.run;
    check_target(run)?;
    let found = stacks(run, printer);
    let reports: Vec<StackJson> = found.iter().map(stack_json).collect();
    let healthy = !reports.is_empty() && reports.iter().all(|r| r.healthy);
    if args.json {
        let out = StatusJson {
            project: project_dir(run).display().to_string(),
            run_dir: root(run).display().to_string(),
            stacks: reports,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        if out.stacks.iter().all(|s| s.state == "stale") {
            return Err(none_running(run));
        }
        return Ok(if healthy { Status::Success } else { Status::Failed });
    }
    let live: Vec<&StackJson> = reports.iter().filter(|r| r.state != "stale").collect();
    if live.is_empty() {
        return Err(none_running(run));
    }
    for r in live {
        let health = match &r.health {
            Some(HealthJson {
                status: Some(s), ms, ..
            }) => format!("{s} ({ms} ms)"),
            Some(HealthJson { error: Some(e), .. }) => e.clone(),
            _ => "unknown".into(),
        };
        let path = r.health.as_ref().map_or("/", |h| h.path.as_str());
        println!("{}  {}  health GET {path} → {health}", r.target, r.url);
        println!(
            "  {:<10}  {:>7}  {}",
            "supervisor",
            r.supervisor.pid,
            if r.supervisor.alive { "running" } else { "gone" }
        );
        let orphaned = r.state == "orphaned";
        for c in &r.components {
            let others: Vec<String> = c
                .processes
                .iter()
                .filter(|p| **p != c.pid)
                .map(u32::to_string)
                .collect();
            let what = match (c.alive, orphaned) {
                (true, false) => "running".to_string(),
                (true, true) if others.is_empty() => "orphaned".to_string(),
                (true, true) => format!("orphaned, with {} in its group", others.join(" ")),
                (false, _) if others.is_empty() => "gone".to_string(),
                (false, _) => format!("gone, left in its group: {}", others.join(" ")),
            };
            let restarts = if c.restarts > 0 {
                format!("  ({} restarts)", c.restarts)
            } else {
                String::new()
            };
            println!("  {:<10}  {:>7}  {what}{restarts}", c.name, c.pid);
        }
        for pid in &r.unrecorded {
            println!("  {:<10}  {pid:>7}  orphaned, in the supervisor's session", "(other)");
        }
        if orphaned {
            let serving = if r.health.as_ref().is_some_and(|h| h.status.is_some()) {
                "still serving"
            } else {
                "not answering"
            };
            printer.warn(&format!(
                "{}: the supervisor ({}) is gone; its components run unsupervised ({serving}): nothing restarts \
                 them or stops them\nhint: stop them with `{}`",
                r.target,
                r.supervisor.pid,
                down_command(&run.spec.config, Some(&r.target), run.run_dir.dir.as_deref())
            ));
        }
    }
    Ok(if healthy { Status::Success } else { Status::Failed })
}

pub fn logs(args: &LogsArgs, printer: &Printer) -> anyhow::Result<Status> {
    check_target(&args.run)?;
    let found = stacks(&args.run, printer);
    let Some(Stack { dir, state: st, .. }) = found.iter().find(|s| s.live.condition() != Condition::Stale) else {
        return Err(none_running(&args.run));
    };
    let path = dir.join(state::LOG);
    let mut file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", display_path(&path)))?;
    let mut out = std::io::stdout();
    std::io::copy(&mut file, &mut out)?;
    if args.follow {
        // Until the supervisor is gone (or Ctrl-C).
        let mut pos = file.stream_position()?;
        while st.supervisor.is_running() {
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

/// After this, what still has not exited of a group is reported, not waited for.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn down(args: &RunArgs, printer: &Printer) -> anyhow::Result<Status> {
    check_target(args)?;
    let found: Vec<Stack> = stacks(args, printer)
        .into_iter()
        .filter(|s| s.live.condition() != Condition::Stale)
        .collect();
    if found.is_empty() {
        printer.status("down", &format!("{}; nothing to stop", none_running_message(args)));
        return Ok(Status::Success);
    }
    let mut failed = false;
    for Stack { dir, state: st, live } in found {
        if live.condition() == Condition::Supervised {
            stop_supervisor(&st, printer);
        } else {
            printer.status(
                "stopping",
                &format!(
                    "{}: supervisor {} is gone; stopping its orphaned components",
                    st.target, st.supervisor.pid
                ),
            );
        }
        // Whatever the supervisor left (all of it, when it was killed): each group in reverse
        // start order, TERM, then KILL after its grace; then what is left in a detached
        // supervisor's session outside them.
        let mut survivors: Vec<(String, Vec<u32>)> = Vec::new();
        for c in st.components.iter().rev() {
            let group = st.group(c);
            let main = c.process;
            if let Err(left) = stop_all(
                || group.members(),
                || main.signal(libc::SIGTERM),
                Duration::from_secs(c.grace_secs),
            ) {
                survivors.push((c.name.clone(), left));
            }
        }
        let grace = st.components.iter().map(|c| c.grace_secs).max().unwrap_or(10);
        if let Err(left) = stop_all(|| st.inspect().unrecorded, || false, Duration::from_secs(grace)) {
            survivors.push(("the supervisor's session".into(), left));
        }
        for (what, left) in survivors {
            failed = true;
            printer.error(&anyhow::anyhow!(
                "{what} of {}: processes {} did not exit after SIGKILL",
                st.target,
                left.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            ));
        }
        State::remove(&dir);
        printer.status("stopped", &format!("{} ({})", st.target, st.url));
    }
    Ok(if failed { Status::Failed } else { Status::Success })
}

/// SIGTERM to a live supervisor (through a pidfd, after checking it is the process that
/// wrote the state file), which stops its components in reverse order; waited for as long as
/// its components' graces add up to, then SIGKILL. Returns once it has exited (a zombie that
/// no one reaps has exited) or was killed.
fn stop_supervisor(st: &State, printer: &Printer) {
    let Some(fd) = st.supervisor.open() else { return };
    if fd.signal(libc::SIGTERM).is_err() {
        return;
    }
    let budget: u64 = st.components.iter().map(|c| c.grace_secs).sum::<u64>() + 5;
    if fd.wait_exit(Duration::from_secs(budget)) {
        return;
    }
    printer.warn(&format!(
        "{}: the supervisor {} did not stop within {budget} s; killing it and stopping its components directly",
        st.target, st.supervisor.pid
    ));
    let _ = fd.signal(libc::SIGKILL);
    fd.wait_exit(KILL_WAIT);
}

/// Stops a set of processes (a component's group, what is left of a session), each checked
/// by its start time before every signal: `term_main` (SIGTERM to the main process, which
/// stops its workers) if it can, else SIGTERM to each; SIGKILL to each after `grace`. `Err`
/// with the PIDs that survived even that.
fn stop_all(
    members: impl Fn() -> Vec<ProcId>,
    term_main: impl FnOnce() -> bool,
    grace: Duration,
) -> Result<(), Vec<u32>> {
    let signal_each = |sig| {
        for p in members() {
            p.signal(sig);
        }
    };
    if members().is_empty() {
        return Ok(());
    }
    if !term_main() {
        signal_each(libc::SIGTERM);
    }
    let grace = Instant::now() + grace;
    while Instant::now() < grace && !members().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let left = members();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left.iter().map(|p| p.pid).collect());
        }
        signal_each(libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
    }
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
