//! The production settings of reference/deploy-configs.md §1, asserted on parsed output.
//! Each test is named after the row it guards.

mod common;

use common::parse::{self, Directive};
use common::{Cli, example, project, render};

/// The front's security headers and the value it sends when the app sent none.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

fn site(target: &str) -> Directive {
    let files = render(&example("flask-hello"), target);
    parse::nginx(&files["nginx/flask-hello.conf"])
}

/// The site's default server, when it has one, and the site.
fn servers(main: &Directive) -> (Option<Directive>, Directive) {
    let servers: Vec<&Directive> = main.all("server").collect();
    let (default, site): (Vec<&Directive>, Vec<&Directive>) = servers
        .into_iter()
        .partition(|s| s.one("listen").args.iter().any(|a| a == "default_server"));
    assert_eq!(site.len(), 1, "one site server");
    (default.first().map(|d| (*d).clone()), site[0].clone())
}

fn location<'a>(server: &'a Directive, path: &str) -> &'a Directive {
    server
        .all("location")
        .find(|l| l.args.last().map(String::as_str) == Some(path))
        .unwrap_or_else(|| panic!("no location {path}"))
}

#[test]
fn default_server_refuses_unknown_hosts_and_banners_are_off() {
    for target in ["nginx+embedded", "nginx+uwsgi", "nginx+gunicorn"] {
        let main = site(target);
        let (default, site) = servers(&main);
        // On a production host the catch-all is the one file every app shares
        // (deployctl-default.conf, placed by `install`: tests/install.rs).
        assert!(default.is_none(), "{target}: the production site has no default server");
        assert_eq!(site.arg("server_name"), "localhost flask-hello.test");
        assert_eq!(site.arg("server_tokens"), "off", "{target}");
    }
}

#[test]
fn proxy_headers_come_from_nginx_not_the_client() {
    for target in ["nginx+embedded", "nginx+gunicorn"] {
        let main = site(target);
        let (_, site) = servers(&main);
        let app = location(&site, "/");
        let headers: std::collections::BTreeMap<String, String> = app
            .all("proxy_set_header")
            .map(|d| (d.args[0].clone(), d.args[1].clone()))
            .collect();
        assert_eq!(
            headers["X-Forwarded-For"], "$remote_addr",
            "not $proxy_add_x_forwarded_for, which keeps a spoofed head"
        );
        assert_eq!(headers["X-Forwarded-Proto"], "$scheme");
        // The Host as the client sent it, port included (not `$host`, which drops the port),
        // rebuilt from nginx's validated `$host` and the numeric port the client gave.
        let host_port = host_port_map(&main);
        assert_eq!(headers["Host"], format!("$host{host_port}"));
        assert_eq!(headers["X-Forwarded-Host"], headers["Host"]);
        assert_eq!(headers["X-Forwarded-Port"], "$server_port");
        // Contradictory scheme headers are cleared (Gunicorn answers 400 otherwise).
        for h in ["X-Forwarded-Protocol", "X-Forwarded-Ssl", "Front-End-Https"] {
            assert_eq!(headers[h], "", "{h}");
        }
        assert_eq!(app.arg("proxy_redirect"), "off");
        assert_eq!(app.arg("proxy_http_version"), "1.1");
        assert_eq!(app.arg("proxy_buffering"), "on");
        // Upstream keep-alive: a pool, HTTP/1.1 and a Connection header that is empty unless upgrading.
        let upstream = main.one("upstream");
        assert!(upstream.arg("keepalive").parse::<u32>().unwrap() >= 64);
        let conn_var = &headers["Connection"];
        let map = main
            .all("map")
            .find(|m| m.args[1] == *conn_var)
            .expect("Connection comes from a map");
        let entries: Vec<(String, String)> = map
            .block
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| (d.name.clone(), d.args.join(" ")))
            .collect();
        assert!(
            entries.contains(&(String::new(), String::new())),
            "no upgrade → empty Connection: {entries:?}"
        );
    }
}

/// The `map $http_host` that gives `:PORT` when the client's Host ends in a numeric port, and
/// nothing otherwise; returns its variable.
fn host_port_map(main: &Directive) -> String {
    let map = main
        .all("map")
        .find(|m| m.args[0] == "$http_host")
        .expect("a map of $http_host");
    let entries: Vec<(String, String)> = map
        .block
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| (d.name.clone(), d.args.join(" ")))
        .collect();
    assert_eq!(
        entries,
        [
            ("default".to_string(), String::new()),
            ("~:([0-9]+)$".to_string(), ":$1".to_string())
        ]
    );
    map.args[1].clone()
}

#[test]
fn uwsgi_pass_sets_the_scheme_param_itself() {
    let main = site("nginx+uwsgi");
    let (_, site) = servers(&main);
    let app = location(&site, "/");
    assert_eq!(app.arg("include"), "uwsgi_params");
    let params: std::collections::BTreeMap<String, String> = app
        .all("uwsgi_param")
        .map(|d| (d.args[0].clone(), d.args.get(1).cloned().unwrap_or_default()))
        .collect();
    assert_eq!(
        params["HTTP_X_FORWARDED_PROTO"], "$scheme",
        "with underscores: hyphenated names never reach the app"
    );
    assert_eq!(params["HTTP_X_FORWARDED_FOR"], "$remote_addr");
    // A uwsgi_param named HTTP_* replaces the client's header of that name.
    let host_port = host_port_map(&main);
    assert_eq!(params["HTTP_HOST"], format!("$host{host_port}"));
    assert_eq!(params["HTTP_X_FORWARDED_HOST"], params["HTTP_HOST"]);
    assert_eq!(params["HTTP_X_FORWARDED_PORT"], "$server_port");
    assert!(app.arg("uwsgi_pass").ends_with("_backend"));
    assert!(
        main.one("upstream").all("keepalive").next().is_none(),
        "the uwsgi protocol closes per request"
    );
}

#[test]
fn security_headers_are_repeated_in_every_location_that_adds_headers() {
    for target in ["nginx+embedded", "nginx+uwsgi", "nginx+gunicorn"] {
        let main = site(target);
        let (_, site) = servers(&main);
        let server_headers = site.headers();
        for (h, value) in SECURITY_HEADERS {
            // Added through a variable that a map on the app's own header empties: nginx
            // skips an empty add_header, so an app's own policy is neither doubled nor
            // overridden, and the front's default applies only when the app sent none.
            let var = server_headers
                .get(h)
                .unwrap_or_else(|| panic!("{target}: {h} at server level"));
            let upstream = format!("$upstream_http_{}", h.to_ascii_lowercase().replace('-', "_"));
            let map = main
                .all("map")
                .find(|m| m.args.len() == 2 && &m.args[1] == var)
                .unwrap_or_else(|| panic!("{target}: no map defines {var}"));
            assert_eq!(map.args[0], upstream, "{target}: {h}");
            let entries: Vec<(String, String)> = map
                .block
                .as_ref()
                .unwrap()
                .iter()
                .map(|d| (d.name.clone(), d.args.join(" ")))
                .collect();
            assert_eq!(
                entries,
                [
                    ("".to_string(), value.to_string()),
                    ("default".to_string(), String::new())
                ],
                "{target}: {h}"
            );
        }
        for loc in site.all("location") {
            let own = loc.headers();
            if own.is_empty() {
                continue;
            }
            for (h, v) in &server_headers {
                assert_eq!(
                    own.get(h),
                    Some(v),
                    "{target}: location {:?} adds headers but drops {h}",
                    loc.args
                );
            }
        }
        // The static location adds none (its Cache-Control comes from `expires`), so it keeps
        // the server's.
        assert!(location(&site, "/static/").headers().is_empty(), "{target}");
    }
}

#[test]
fn dotfiles_denied_except_well_known() {
    let main = site("nginx+gunicorn");
    let (_, site) = servers(&main);
    let loc = site
        .all("location")
        .find(|l| l.args.first().map(String::as_str) == Some("~"))
        .expect("a regex location");
    assert_eq!(loc.arg("deny"), "all");
    let re = &loc.args[1];
    assert!(re.contains(r"/\.") && re.contains("well-known"), "{re}");
}

#[test]
fn static_alias_slashes_match_and_expire() {
    let main = site("nginx+uwsgi");
    let (_, site) = servers(&main);
    let loc = location(&site, "/static/");
    let alias = loc.arg("alias");
    assert!(
        alias.starts_with('/') && alias.ends_with("/static/"),
        "absolute, trailing slash like the URL: {alias}"
    );
    assert_eq!(loc.arg("expires"), "604800s");
}

/// Browsers refuse a stylesheet served as text/plain next to `nosniff`: the site has its own
/// content types (nginx's `mime.types`, resolved in nginx's configuration directory in
/// production and copied there by the validators and `up`) rather than relying on the http
/// block that includes it; and one Cache-Control, from `expires` (an `add_header
/// Cache-Control` beside it would send a second).
#[test]
fn static_files_get_their_content_type_and_one_cache_control() {
    for target in ["nginx+embedded", "nginx+uwsgi", "nginx+gunicorn"] {
        let main = site(target);
        let (_, site) = servers(&main);
        assert_eq!(site.arg("include"), "mime.types", "{target}");
        assert_eq!(site.arg("default_type"), "application/octet-stream", "{target}");
        for loc in site.all("location") {
            let cache_controls = loc
                .all("add_header")
                .filter(|d| d.args[0].eq_ignore_ascii_case("cache-control"))
                .count()
                + loc.all("expires").count();
            assert!(cache_controls <= 1, "{target}: location {:?}", loc.args);
        }
        assert_eq!(location(&site, "/static/").all("expires").count(), 1);
    }
}

/// Alone, uWSGI serves `[[static]]` itself: a static map per mount, `Expires` and one
/// `Cache-Control: max-age` on 200 answers under the mount (response routes on PATH_INFO, the
/// decoded path `static-map` matches, which only run for the mount's paths); behind nginx it
/// maps nothing.
#[test]
fn lone_uwsgi_maps_static_files_with_expiry() {
    let dir = project(
        "[app]\nname = \"s\"\nentry = \"app:app\"\n[backend]\nkind = \"uwsgi\"\n\
         [[static]]\nurl = \"/static/\"\ndir = \"static\"\n\
         [[static]]\nurl = \"/media.v2/\"\ndir = \"media\"\nexpires = \"1h\"\n",
        &["static", "media"],
    );
    let root = dir.path().canonicalize().unwrap().display().to_string();
    let files = render(dir.path(), "uwsgi");
    let ini = parse::ini(&files["uwsgi/s.ini"], &[';', '#']);
    let v = |k: &str| parse::values(&ini, "uwsgi", k);
    assert_eq!(
        v("static-map"),
        [format!("/static/={root}/static/"), format!("/media.v2/={root}/media/")]
    );
    assert_eq!(
        v("static-expires-path-info"),
        [r"^/static/ 604800", r"^/media\.v2/ 3600"]
    );
    assert_eq!(
        v("response-route"),
        [
            r"^/static/ goto:deployctl-static-0",
            r"^/media\.v2/ goto:deployctl-static-1"
        ]
    );
    assert_eq!(v("response-route-label"), ["deployctl-static-0", "deployctl-static-1"]);
    assert_eq!(
        v("response-route-status"),
        [
            "200 addheader:Cache-Control: max-age=604800",
            "200 addheader:Cache-Control: max-age=3600"
        ]
    );
    // The routes of a label end there: no other response gets a Cache-Control.
    assert_eq!(v("response-route-run"), ["last:", "last:", "last:"]);

    let behind = render(dir.path(), "nginx+uwsgi");
    let ini = parse::ini(&behind["uwsgi/s.ini"], &[';', '#']);
    for key in ["static-map", "static-expires-path-info", "response-route"] {
        assert!(parse::values(&ini, "uwsgi", key).is_empty(), "{key} behind nginx");
    }
}

#[test]
fn one_body_size_and_timeout_flow_into_every_layer() {
    let dir = project(
        "[app]\nname = \"flow\"\nentry = \"app:app\"\n[server]\nmax_body = \"25M\"\ntimeout = \"2m\"\n",
        &[],
    );
    let bytes = (25 << 20).to_string();
    let uw = render(dir.path(), "nginx+uwsgi");
    let ini = parse::ini(&uw["uwsgi/flow.ini"], &[';', '#']);
    assert_eq!(parse::value(&ini, "uwsgi", "limit-post"), bytes);
    let harakiri: u64 = parse::value(&ini, "uwsgi", "harakiri").parse().unwrap();
    assert_eq!(harakiri, 120);
    let main = parse::nginx(&uw["nginx/flow.conf"]);
    let (_, site) = servers(&main);
    assert_eq!(site.arg("client_max_body_size"), "25M");
    let read: u64 = location(&site, "/")
        .arg("uwsgi_read_timeout")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        read >= harakiri,
        "front read timeout {read} < backend timeout {harakiri}"
    );

    let gu = render(dir.path(), "nginx+gunicorn");
    let main = parse::nginx(&gu["nginx/flow.conf"]);
    let (_, site) = servers(&main);
    let read: u64 = location(&site, "/")
        .arg("proxy_read_timeout")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(read >= 120);

    let em = render(dir.path(), "nginx+embedded");
    let unit = parse::ini(&em["systemd/flow.service"], &['#', ';']);
    let exec: Vec<&str> = parse::value(&unit, "Service", "ExecStart").split(' ').collect();
    let flag = |f: &str| exec[exec.iter().position(|w| *w == f).unwrap_or_else(|| panic!("no {f}")) + 1];
    assert_eq!(flag("--max-body"), bytes);
    assert_eq!(flag("--timeout"), "120");
    assert_eq!(flag("--bind"), "unix:/run/flow.sock");
    assert_eq!(exec[1], "serve");
    assert_eq!(exec[2], "app:app");
}

#[test]
fn uwsgi_ini_is_strict_and_plugin_only_for_debian_build() {
    let files = render(&example("flask-hello"), "nginx+uwsgi");
    let ini = parse::ini(&files["uwsgi/flask-hello.ini"], &[';', '#']);
    let section = &ini.iter().find(|(s, _)| s == "uwsgi").unwrap().1;
    assert_eq!(
        section[0],
        ("plugins".to_string(), "python3".to_string()),
        "the plugin must load first"
    );
    for key in ["strict", "master", "need-app", "die-on-term"] {
        assert_eq!(parse::value(&ini, "uwsgi", key), "true", "{key}");
    }
    assert!(
        parse::values(&ini, "uwsgi", "socket").is_empty(),
        "under socket activation uWSGI takes the socket from systemd"
    );

    let dir = project(
        "[app]\nname = \"p\"\nentry = \"app:create_app()\"\n[backend]\nkind = \"uwsgi\"\nuwsgi_build = \"pip\"\n",
        &[],
    );
    let files = render(dir.path(), "uwsgi");
    let ini = parse::ini(&files["uwsgi/p.ini"], &[';', '#']);
    assert!(
        parse::values(&ini, "uwsgi", "plugins").is_empty(),
        "pip-built uWSGI has Python built in"
    );
    assert_eq!(
        parse::value(&ini, "uwsgi", "protocol"),
        "http",
        "alone, uWSGI speaks HTTP on the systemd socket"
    );
    assert!(
        parse::value(&ini, "uwsgi", "eval").contains("create_app()"),
        "factories are called"
    );
    let unit = parse::ini(&files["systemd/p.service"], &['#', ';']);
    assert!(parse::value(&unit, "Service", "ExecStart").contains("/.venv/bin/uwsgi "));
}

#[test]
fn systemd_units_are_notify_reloadable_and_hardened() {
    for target in common::TARGETS {
        let files = render(&example("flask-hello"), target);
        let Some(unit) = files.get("systemd/flask-hello.service") else {
            // mod_wsgi runs inside Debian's apache2.service: no unit of its own.
            assert!(target.ends_with("+mod_wsgi"), "{target}");
            continue;
        };
        let unit = parse::ini(unit, &['#', ';']);
        let v = |k: &str| parse::value(&unit, "Service", k).to_string();
        assert_eq!(v("Type"), "notify", "{target}");
        assert_eq!(v("ExecReload"), "/bin/kill -s HUP $MAINPID");
        assert_eq!(v("KillMode"), "mixed");
        assert_eq!(v("RuntimeDirectory"), "flask-hello");
        for (k, want) in [
            ("NoNewPrivileges", "yes"),
            ("CapabilityBoundingSet", ""),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("PrivateUsers", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("RestrictNamespaces", "yes"),
            ("UMask", "0027"),
        ] {
            assert_eq!(v(k), want, "{target}: {k}");
        }
        let filters = parse::values(&unit, "Service", "SystemCallFilter");
        assert_eq!(filters, ["@system-service", "~@privileged @resources"]);
        let socket = parse::ini(&files["systemd/flask-hello.socket"], &['#', ';']);
        let listen = parse::value(&socket, "Socket", "ListenStream");
        // Behind a front (nginx, or Apache as Debian runs it: www-data).
        if target.contains('+') {
            assert_eq!(listen, "/run/flask-hello.sock");
            assert_eq!(parse::value(&socket, "Socket", "SocketUser"), "www-data");
            assert_eq!(parse::value(&socket, "Socket", "SocketGroup"), "www-data");
            assert_eq!(parse::value(&socket, "Socket", "SocketMode"), "0660");
        } else {
            assert_eq!(listen, "0.0.0.0:80");
        }
    }
}

#[test]
fn hardening_trade_offs_are_spec_knobs() {
    let dir = project(
        "[app]\nname = \"k\"\nentry = \"app:app\"\n[systemd]\nmemory_deny_write_execute = false\nprivate_users = false\n\
         deny_resource_syscalls = false\nlocalhost_only = true\nread_write_paths = [\"/var/lib/k-data\"]\n",
        &[],
    );
    let files = render(dir.path(), "gunicorn");
    let unit = parse::ini(&files["systemd/k.service"], &['#', ';']);
    assert!(parse::values(&unit, "Service", "MemoryDenyWriteExecute").is_empty());
    assert!(parse::values(&unit, "Service", "PrivateUsers").is_empty());
    assert_eq!(
        parse::values(&unit, "Service", "SystemCallFilter"),
        ["@system-service", "~@privileged"]
    );
    assert_eq!(parse::value(&unit, "Service", "IPAddressDeny"), "any");
    assert_eq!(parse::value(&unit, "Service", "IPAddressAllow"), "localhost");
    assert_eq!(parse::value(&unit, "Service", "ReadWritePaths"), "/var/lib/k-data");
}

/// Gunicorn ignores unknown names in a Python config file, so every name rendered must be one
/// the real Gunicorn knows; values are read back by executing the file with Python.
#[test]
fn gunicorn_config_uses_only_known_settings() {
    let venv = example("flask-hello").join(".venv/bin/python");
    assert!(
        venv.is_file(),
        "the example's virtualenv (with gunicorn) is set up by .ci/run"
    );
    let files = render(&example("flask-hello"), "nginx+gunicorn");
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), &files["gunicorn/gunicorn.conf.py"]).unwrap();
    let script = "import json, sys, gunicorn.config as c\n\
        ns = {}\nexec(open(sys.argv[1]).read(), ns)\n\
        known = {s.name for s in c.KNOWN_SETTINGS}\n\
        names = [k for k, v in ns.items() if not k.startswith('__') and not hasattr(v, '__spec__')]\n\
        values = {n: ('<function>' if callable(ns[n]) else ns[n]) for n in names}\n\
        print(json.dumps({'unknown': [n for n in names if n not in known], 'values': values}))";
    let out = std::process::Command::new(&venv)
        .arg("-c")
        .arg(script)
        .arg(conf.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unknown"], serde_json::json!([]));
    let values = &v["values"];
    assert_eq!(
        values["secure_scheme_headers"],
        serde_json::json!({"X-FORWARDED-PROTO": "https"})
    );
    assert_eq!(values["forwarded_allow_ips"], "127.0.0.1,::1");
    assert_eq!(
        values["control_socket"], "/run/flask-hello/gunicorn.ctl",
        "not under $HOME, which ProtectHome hides"
    );
    assert_eq!(values["timeout"], 30);
    assert_eq!(values["wsgi_app"], "app:app");
    assert!(values["workers"].as_u64().unwrap() >= 1);
    assert_eq!(values["post_worker_init"], "<function>");
}

/// Behind nginx, Gunicorn's REMOTE_ADDR would be empty (it never reads X-Forwarded-For, and
/// the unix socket's peer has no address): the config's `post_worker_init` wraps the loaded
/// app. Run here with Python on a stand-in worker: a unix-socket request gets nginx's
/// X-Forwarded-For, a TCP peer's address is never replaced. Alone, Gunicorn has no hook.
#[test]
fn gunicorn_behind_nginx_takes_remote_addr_from_nginx_only() {
    let python = example("flask-hello").join(".venv/bin/python");
    assert!(
        python.is_file(),
        "the example's virtualenv is set up by scripts/setup.sh"
    );
    let script = "import json, sys\n\
        ns = {}\nexec(open(sys.argv[1]).read(), ns)\n\
        hook = ns.get('post_worker_init')\n\
        if hook is None:\n    print('null'); sys.exit()\n\
        class Worker:\n    wsgi = staticmethod(lambda environ, start_response: environ.get('REMOTE_ADDR'))\n\
        w = Worker()\nhook(w)\n\
        cases = [{'REMOTE_ADDR': '', 'HTTP_X_FORWARDED_FOR': '203.0.113.7'},\n\
                 {'REMOTE_ADDR': '', 'HTTP_X_FORWARDED_FOR': '6.6.6.6, 203.0.113.8'},\n\
                 {'REMOTE_ADDR': '', },\n\
                 {'REMOTE_ADDR': '198.51.100.1', 'REMOTE_PORT': '5000', 'HTTP_X_FORWARDED_FOR': '6.6.6.6'}]\n\
        print(json.dumps([w.wsgi(c, None) for c in cases]))";
    let run = |target: &str| -> serde_json::Value {
        let files = render(&example("flask-hello"), target);
        let conf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(conf.path(), &files["gunicorn/gunicorn.conf.py"]).unwrap();
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(conf.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(
        run("nginx+gunicorn"),
        serde_json::json!(["203.0.113.7", "203.0.113.8", "", "198.51.100.1"])
    );
    assert_eq!(run("gunicorn"), serde_json::Value::Null);
}

#[test]
fn render_is_deterministic() {
    for target in common::TARGETS {
        let a = Cli::new(&example("flask-hello"))
            .args(["render", "--stdout", "-t", target])
            .run()
            .success()
            .stdout;
        let b = Cli::new(&example("flask-hello"))
            .args(["render", "--stdout", "-t", target])
            .run()
            .success()
            .stdout;
        assert_eq!(a, b);
    }
}

/// An app under /tmp (or /home, /root) would be hidden by PrivateTmp/ProtectHome: the unit
/// binds its paths back read-only instead of weakening the sandbox.
#[test]
fn app_paths_hidden_by_the_sandbox_are_bound_read_only() {
    let dir = project("[app]\nname = \"b\"\nentry = \"app:app\"\n", &[]);
    let files = render(dir.path(), "gunicorn");
    let unit = parse::ini(&files["systemd/b.service"], &['#', ';']);
    let binds = parse::values(&unit, "Service", "BindReadOnlyPaths");
    let root = dir.path().display().to_string();
    assert!(root.starts_with("/tmp"), "tempdir under /tmp: {root}");
    assert!(binds.contains(&format!("-{root}").as_str()), "{binds:?}");
    assert_eq!(parse::value(&unit, "Service", "PrivateTmp"), "yes");
    assert!(["yes", "tmpfs"].contains(&parse::value(&unit, "Service", "ProtectHome")));
}

/// Regression (issue 12): `nginx+embedded` rendered from a spec whose `[backend].kind` is
/// Gunicorn lost the `BindReadOnlyPaths=` of the `deployctl` binary its unit runs — the view
/// asked the spec's backend instead of the target's. The unit of the target's server binds the
/// program it starts back read-only; a Gunicorn unit does not bind `deployctl`.
#[test]
fn nginx_embedded_from_a_gunicorn_spec_binds_deployctl_read_only() {
    let bin = tempfile::tempdir().unwrap();
    let deployctl = bin.path().join("deployctl");
    let toml = format!(
        "[app]\nname = \"g\"\nentry = \"app:app\"\n[backend]\nkind = \"gunicorn\"\n[systemd]\ndeployctl = \"{}\"\n",
        deployctl.display()
    );
    let dir = project(&toml, &[]);
    let binds_of = |target: &str| -> Vec<String> {
        let files = render(dir.path(), target);
        let unit = parse::ini(&files["systemd/g.service"], &['#', ';']);
        parse::values(&unit, "Service", "BindReadOnlyPaths")
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let want = format!("-{}", deployctl.display());
    let embedded = binds_of("nginx+embedded");
    assert!(embedded.contains(&want), "{embedded:?}");
    let gunicorn = binds_of("nginx+gunicorn");
    assert!(!gunicorn.contains(&want), "{gunicorn:?}");
}
