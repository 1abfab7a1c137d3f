//! `deployctl up`: check everything that can be checked before starting anything, render the
//! local-run configs into `.deployctl/<target>/`, start the stack, supervise it until Ctrl-C
//! or SIGTERM, then stop it in reverse order.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;

use crate::cli::UpArgs;
use crate::commands::serve::{find_server, probe};
use crate::commands::{Status, load, parse_target};
use crate::orchestrate::stack::{self, RunPlan};
use crate::printer::{Printer, hinted};
use crate::render;
use crate::serve::check_venv_version;
use crate::spec::{self, display_path};
use crate::target::{Backend, Frontend};

pub fn run(args: &UpArgs, printer: &Printer) -> anyhow::Result<Status> {
    let (mut spec, templates) = load(&args.spec)?;
    let target = parse_target(&spec, args.target.as_deref())?;
    if let Some(l) = &args.listen {
        spec.server.listen = spec::parse_listen(l).map_err(|m| anyhow::anyhow!("--listen: {m}"))?;
    }
    let listen = resolve(&spec.server.listen.to_string())?;

    // Everything that can fail before a process starts, fails here.
    check_port(listen)?;
    if target.backend != Backend::Embedded {
        anyhow::bail!("`deployctl up` runs `*+embedded` targets for now; `{target}` comes next");
    }
    let server_bin = find_server()?;
    let built_for = probe(&server_bin)?;
    if !spec.app.venv.join("bin/python3").exists() {
        return Err(hinted(
            format!("the virtualenv {} does not exist", display_path(&spec.app.venv)),
            format!(
                "create it: `python3 -m venv {v} && {v}/bin/pip install -r requirements.txt`",
                v = display_path(&spec.app.venv)
            ),
        ));
    }
    check_venv_version(&spec.app.venv, &built_for)?;
    let nginx_bin = match target.frontend {
        Frontend::Nginx => Some(which::which("nginx").map_err(|_| {
            hinted(
                format!("nginx is not installed (target `{target}` needs it)"),
                "install it with `apt-get install nginx`, or run without a front: `--target embedded`",
            )
        })?),
        _ => None,
    };

    let run_dir = spec.dir().join(".deployctl").join(target.to_string());
    let conf_dir = run_dir.join("conf");
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", display_path(&run_dir)))?;
    let tree = render::render_local(&spec, target, &conf_dir, &run_dir, &templates)?;
    if conf_dir.exists() {
        std::fs::remove_dir_all(&conf_dir)?;
    }
    tree.write_into(&conf_dir)?;
    let nginx_site = nginx_bin
        .as_ref()
        .map(|_| conf_dir.join("nginx").join(format!("{}.conf", spec.app.name)));
    printer.status("rendered", &format!("{target} into {}", display_path(&run_dir)));

    // Signals are read from a signalfd by the loop below; blocked before any child exists
    // (children unblock them for themselves).
    let signals = block_signals().context("blocking signals")?;
    let plan = RunPlan {
        spec: &spec,
        target,
        run_dir,
        listen,
        server_bin,
        nginx_bin,
        nginx_site,
    };
    let mut running = stack::start(&plan, printer)?;
    printer.status("up", &format!("{} — Ctrl-C stops", running.url));
    println!("{}", running.url);
    loop {
        let mut pfd = libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid fd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
        for sig in pending_signals(&signals) {
            match sig {
                libc::SIGINT | libc::SIGTERM => {
                    printer.status("stopping", "front first, then the app");
                    running.stop(&spec);
                    printer.status("stopped", "no process left");
                    return Ok(Status::Success);
                }
                _ => printer.warn("SIGHUP: re-rendering and reloading comes with the next slice of `up`"),
            }
        }
        if let Some((name, detail)) = running.crashed() {
            running.stop(&spec);
            anyhow::bail!(
                "{name} stopped unexpectedly; everything was stopped\n{}",
                detail.trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    let host_port = listen.replace("localhost:", "127.0.0.1:");
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| anyhow::anyhow!("cannot resolve the listen address {listen}"))
}

/// A privileged port without the right to bind it, or a port in use: clear errors before
/// anything starts.
fn check_port(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(hinted(
            format!("cannot listen on {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE"),
            "run locally on a high port: `deployctl up --listen 127.0.0.1:8000`",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(hinted(
            format!("cannot listen on {addr}: the address is already in use by another process"),
            "stop it, or pick another address with `--listen HOST:PORT`",
        )),
        Err(e) => Err(anyhow::anyhow!("cannot listen on {addr}: {e}")),
    }
}

fn block_signals() -> std::io::Result<OwnedFd> {
    // SAFETY: building a signal set, blocking it in this (still single-threaded) process and
    // creating a signalfd we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn pending_signals(fd: &OwnedFd) -> Vec<i32> {
    let mut out = Vec::new();
    // SAFETY: reading whole signalfd_siginfo records.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    while unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) }
        == size as isize
    {
        out.push(info.ssi_signo as i32);
    }
    out
}
