//! The rendered `Containerfile` built by a real builder (Debian's podman, which takes the
//! same `build` flags as Docker's BuildKit, `--build-context` included), and the image run
//! the way the rendered Deployment runs its pod: as its numeric user, on a read-only root
//! filesystem with only the emptyDir's `/tmp` writable, every capability dropped, no new
//! privileges, the ConfigMap's environment. The rendered probes' requests must pass against
//! it, the image's own `HEALTHCHECK` must pass, and a TERM during a request must let the
//! request finish and the container exit 0 within the grace period.
//!
//! No container registry is reachable here, so the two base images the Containerfile names
//! are stand-ins built on this machine (`tests/image/stand-in-bases.sh`: Debian 12 with
//! Debian's CPython 3.11 for `python:3.11-slim-bookworm`, this machine's Rust toolchain for
//! `rust:1-slim-bookworm`) and tagged with those names in a podman storage of the test's
//! own (under `target/tmp`), so the Containerfile builds unmodified: its `RUN`s reach
//! Debian's archive, crates.io and PyPI as on any machine.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::up::{free_port, get, request, wait_for};
use common::{Cli, example, repo};
use serde_json::Value as Json;
use serde_yaml::Value;

fn require_validators() -> bool {
    std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

/// podman with a storage of the test's own, so nothing of a user's podman (images, the
/// stand-ins' borrowed names) is touched.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    /// `None` (the test is skipped) when a tool is missing and validators are not required.
    fn new() -> Option<Podman> {
        let missing: Vec<&str> = ["podman", "runc", "debootstrap"]
            .into_iter()
            .filter(|t| which(t).is_none())
            .collect();
        if !missing.is_empty() {
            assert!(
                !require_validators(),
                "{missing:?} not installed (scripts/setup.sh installs them)"
            );
            eprintln!("skipped: {missing:?} not installed");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podman");
        std::fs::create_dir_all(&dir).unwrap();
        Some(Podman { dir })
    }

    /// The global flags. `runc`: Debian 12's crun refuses this machine's hybrid cgroup
    /// hierarchy ("cgroups in hybrid mode not supported"); runc takes it.
    fn global(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("--root={d}/storage"),
            format!("--runroot={d}/run"),
            "--runtime=runc".into(),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
        ]
    }

    /// Per-container resource limits. podman asks for a very high `RLIMIT_NOFILE` and
    /// `RLIMIT_NPROC` by default, which the sandbox these tests run in forbids (EPERM from
    /// setrlimit in the container's init): ask for this process's own open-file limit and a
    /// modest process count instead.
    fn ulimits() -> Vec<String> {
        let mut nofile = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) }, 0);
        vec![
            format!("--ulimit=nofile={0}:{0}", nofile.rlim_cur),
            "--ulimit=nproc=4096:4096".into(),
        ]
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.args(self.global()).stdin(Stdio::null());
        c
    }

    /// Runs `podman ARGS`; panics with its output unless it succeeds.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run podman");
        assert!(out.status.success(), "podman {args:?}: {}", said(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The stand-in base images, built once per storage.
    fn stand_in_bases(&self) {
        let script = repo().join("tests/image/stand-in-bases.sh");
        let mut podman = vec!["podman".to_string()];
        podman.extend(self.global());
        let out = Command::new("bash")
            .arg(&script)
            .arg(self.dir.join("bases"))
            .args(&podman)
            .env("STAND_IN_BUILD_FLAGS", Self::ulimits().join(" "))
            .stdin(Stdio::null())
            .output()
            .expect("run stand-in-bases.sh");
        assert!(out.status.success(), "{}: {}", script.display(), said(&out));
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

fn said(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A route the TERM test needs, appended to the example's app.
const SLOW_ROUTE: &str = r#"

import time


@app.get("/slow")
def slow():
    time.sleep(3)
    return "slow and complete"
"#;

/// The example project (no virtualenv: a local one must not reach the image, so a marker
/// stands in its place), with the slow route and an image name.
fn project() -> tempfile::TempDir {
    let ex = example("flask-hello");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let toml = std::fs::read_to_string(ex.join("deploy.toml")).unwrap()
        + "\n[cluster]\nimage = \"localhost/deployctl-test/flask-hello:1\"\n";
    std::fs::write(p.join("deploy.toml"), toml).unwrap();
    let app = std::fs::read_to_string(ex.join("app.py")).unwrap() + SLOW_ROUTE;
    std::fs::write(p.join("app.py"), app).unwrap();
    std::fs::copy(ex.join("requirements.txt"), p.join("requirements.txt")).unwrap();
    std::fs::create_dir_all(p.join("static")).unwrap();
    for e in std::fs::read_dir(ex.join("static")).unwrap().flatten() {
        std::fs::copy(e.path(), p.join("static").join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(p.join(".venv")).unwrap();
    std::fs::write(p.join(".venv/LOCAL-VENV"), "the local virtualenv").unwrap();
    dir
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

fn json_strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

/// Removes the container (and its anonymous volumes) when the test ends, failed or not.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["rm", "--force", "--volumes", "--time=0", &self.name])
            .output();
    }
}

/// Removes the image built and the build's dangling stages when the test ends (the stand-in
/// bases stay for the next run).
struct Image<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = self.podman.cmd().args(["rmi", "--force", &self.name]).output();
        let _ = self.podman.cmd().args(["image", "prune", "--force"]).output();
    }
}

#[test]
fn the_rendered_containerfile_builds_and_the_image_runs_as_the_pod() {
    let Some(podman) = Podman::new() else { return };
    let started = Instant::now();
    podman.stand_in_bases();
    eprintln!("stand-in bases ready in {:?}", started.elapsed());

    let dir = project();
    let p = dir.path();
    Cli::new(p).args(["render", "--target", "kubernetes"]).run().success();
    let k8s = p.join("deploy/kubernetes");
    let deployment = yaml(&k8s.join("deployment.yaml"));
    let configmap = yaml(&k8s.join("configmap.yaml"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let image = container["image"].as_str().expect("the container's image");
    assert_eq!(image, "localhost/deployctl-test/flask-hello:1");

    // The README's build command, with podman for docker.
    let built = Instant::now();
    let context = format!("deployctl={}", repo().display());
    let mut build: Vec<String> = [
        "build",
        "--pull=never",
        "--network=host",
        "--format=docker",
        "--build-context",
        &context,
        "--ignorefile",
        "deploy/kubernetes/Containerfile.dockerignore",
        "-f",
        "deploy/kubernetes/Containerfile",
        "-t",
        image,
    ]
    .map(String::from)
    .to_vec();
    build.extend(Podman::ulimits());
    build.push(".".into());
    let _image = Image {
        podman: &podman,
        name: image.to_string(),
    };
    let out = podman
        .cmd()
        .args(&build)
        .current_dir(p)
        .output()
        .expect("run podman build");
    assert!(out.status.success(), "podman build: {}", said(&out));
    eprintln!("image built in {:?}", built.elapsed());

    // The image's configuration is the pod's: same argv, user, port.
    let inspect: Json = serde_json::from_str(&podman.ok(&["image", "inspect", image])).unwrap();
    let config = &inspect[0]["Config"];
    let mut pod_argv = strings(&container["command"]);
    pod_argv.extend(strings(&container["args"]));
    assert_eq!(json_strings(&config["Entrypoint"]), pod_argv);
    let ctx = &pod["securityContext"];
    let (uid, gid) = (
        ctx["runAsUser"].as_u64().expect("runAsUser"),
        ctx["runAsGroup"].as_u64().expect("runAsGroup"),
    );
    assert_eq!(config["User"].as_str(), Some(format!("{uid}:{gid}").as_str()));
    let port = container["ports"][0]["containerPort"].as_u64().expect("containerPort");
    assert!(
        config["ExposedPorts"]
            .as_object()
            .is_some_and(|m| m.contains_key(&format!("{port}/tcp"))),
        "{config}"
    );
    assert_eq!(config["WorkingDir"].as_str(), Some("/app"));
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"].as_str(),
        Some("flask-hello")
    );
    // podman keeps the HEALTHCHECK beside the OCI config (which has no field for it): the
    // image's Python asks the liveness probe's path on the container's port.
    let health = &inspect[0]["Healthcheck"];
    let test = json_strings(&health["Test"]);
    let live = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("the liveness probe's path");
    assert_eq!(test[..3], ["CMD", "/app/.venv/bin/python3", "-c"], "{health}");
    assert!(
        test[3].contains(&format!("'http://127.0.0.1:{port}{live}'")),
        "{health}"
    );

    // Run it as the pod runs: the Deployment's security context and volumes.
    let sec = &container["securityContext"];
    assert_eq!(sec["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sec["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&sec["capabilities"]["drop"]), ["ALL"]);
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("mountPath"))
        .collect();
    assert_eq!(mounts, ["/tmp"], "the writable paths this test gives");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let drain = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let env: BTreeMap<String, String> = configmap["data"]
        .as_mapping()
        .expect("the ConfigMap's data")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
        .collect();
    let host_port = free_port();
    let name = format!("deployctl-test-{}", std::process::id());
    let mut run: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        format!("--name={name}"),
        "--read-only".into(),
        "--read-only-tmpfs=false".into(),
        "--tmpfs=/tmp".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--user={uid}:{gid}"),
        format!("--publish=127.0.0.1:{host_port}:{port}"),
        format!("--stop-timeout={}", grace - drain),
    ];
    run.extend(Podman::ulimits());
    for (k, v) in &env {
        run.push(format!("--env={k}={v}"));
    }
    run.push(image.into());
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    podman.ok(&run);
    let _container = Container {
        podman: &podman,
        name: name.clone(),
    };
    let logs = || {
        podman
            .cmd()
            .args(["logs", &name])
            .output()
            .map(|o| said(&o))
            .unwrap_or_default()
    };

    // The kubelet's probes: httpGet PATH on the container's port, 200–399.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}'s path"));
        let ok = wait_for(90, || {
            std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok()
                && (200..400).contains(&get(host_port, "127.0.0.1", path, &[]).status)
        });
        assert!(ok, "{probe} GET {path} failed\n{}", logs());
    }
    let page = get(host_port, "flask-hello.test", "/", &[]);
    assert_eq!(page.status, 200);
    assert!(
        String::from_utf8_lossy(&page.body).contains("<h1>Hello from flask-hello</h1>"),
        "{page:?}"
    );
    // `[[static]]` from the image's copy, by the pod's own server, with its expiry.
    let css = get(host_port, "flask-hello.test", "/static/style.css", &[]);
    assert_eq!(css.status, 200, "{css:?}");
    assert_eq!(
        css.body,
        std::fs::read(p.join("static/style.css")).unwrap(),
        "the image's copy of the static file"
    );
    assert!(css.one("cache-control").contains("max-age=604800"), "{css:?}");

    // Inside: the virtualenv is the image's, not the local one; the root filesystem refuses
    // writes, /tmp takes them; PID 1 is the server itself, as the user.
    let exec = |script: &str| {
        podman
            .cmd()
            .args(["exec", &name, "sh", "-c", script])
            .output()
            .expect("podman exec")
    };
    // What Containerfile.dockerignore leaves out of the build context.
    let local = exec("test -e /app/.venv/LOCAL-VENV");
    assert!(!local.status.success(), "the local virtualenv reached the image");
    let rendered = exec("test -e /app/deploy");
    assert!(!rendered.status.success(), "deploy/ reached the image");
    let venv = exec("/app/.venv/bin/python -c 'import flask, sys; print(sys.prefix)'");
    assert!(venv.status.success(), "{}", said(&venv));
    let ro = exec("touch /app/written");
    assert!(
        String::from_utf8_lossy(&ro.stderr).contains("Read-only file system"),
        "{}",
        said(&ro)
    );
    assert!(exec("touch /tmp/written").status.success());
    let pid1 = exec("readlink /proc/1/exe; id -u; id -g");
    let pid1 = String::from_utf8_lossy(&pid1.stdout).into_owned();
    assert_eq!(
        pid1.lines().collect::<Vec<_>>(),
        ["/usr/local/bin/deployctl-server", &uid.to_string(), &gid.to_string()],
        "PID 1 and its user"
    );

    // The image's own HEALTHCHECK (its Python asks [health].path).
    let health = podman
        .cmd()
        .args(["healthcheck", "run", &name])
        .output()
        .expect("podman healthcheck run");
    assert!(health.status.success(), "HEALTHCHECK: {}", said(&health));

    // TERM (the image's STOPSIGNAL, what the kubelet sends after preStop) one second into a
    // 3 s request: the request completes, the container exits 0 within the grace period.
    let slow = std::thread::spawn(move || {
        request(
            host_port,
            "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let termed = Instant::now();
    let stop = podman
        .cmd()
        .args(["stop", &format!("--time={}", grace - drain), &name])
        .output()
        .expect("podman stop");
    let stopped_in = termed.elapsed();
    assert!(stop.status.success(), "podman stop: {}", said(&stop));
    let (code, head, body) = slow.join().expect("the slow request");
    assert_eq!((code, body.as_str()), (200, "slow and complete"), "{head}\n{}", logs());
    let state: Json = serde_json::from_str(&podman.ok(&["inspect", &name])).unwrap();
    assert_eq!(
        state[0]["State"]["ExitCode"].as_i64(),
        Some(0),
        "{}\n{}",
        state[0]["State"],
        logs()
    );
    assert!(
        stopped_in < Duration::from_secs(grace - drain),
        "stopped in {stopped_in:?}, grace {grace} s less the {drain} s pause"
    );
    eprintln!("TERM to exit: {stopped_in:?}");
}
