//! The nginx front and the Apache front (mod_ssl, both shapes) with `[tls]`, asserted on the
//! parsed files (content.rs's style), and snapshots of a TLS spec's files. The snapshot renders through the library with the front's
//! capabilities pinned (OpenSSL 3.0.19, HTTP/2), so it is the same on every machine; the
//! content tests go through the CLI, which probes this machine's nginx.

mod common;

use common::parse::{self, Directive};
use common::{Cli, filter_paths, project, render, split_listing};
use deployctl::plan::{Environment, Plan};
use deployctl::tls::{Capabilities, OpensslVersion};

fn spec_text(tls: &str) -> String {
    format!(
        "[app]\nname = \"shop\"\nentry = \"app:app\"\n\n[server]\nnames = [\"shop.example\", \"www.shop.example\"]\n\n\
         [[static]]\nurl = \"/static/\"\ndir = \"static\"\n\n[tls]\n{tls}"
    )
}

fn site(tls: &str, target: &str) -> Directive {
    let dir = project(&spec_text(tls), &["static"]);
    let files = render(dir.path(), target);
    parse::nginx(&files["nginx/shop.conf"])
}

/// The servers of a TLS site: (HTTP site, HTTPS site). In production the catch-alls for
/// unknown names are the shared `deployctl-default.conf` that `install` places
/// (tests/install.rs).
fn servers(main: &Directive) -> [Directive; 2] {
    let all: Vec<&Directive> = main.all("server").collect();
    assert_eq!(all.len(), 2, "the HTTP site and the HTTPS site, no default server");
    let is_default = |s: &Directive| s.one("listen").args.iter().any(|a| a == "default_server");
    assert!(!all.iter().any(|s| is_default(s)));
    let is_tls = |s: &Directive| s.one("listen").args.iter().any(|a| a == "ssl");
    let pick = |tls: bool| {
        all.iter()
            .find(|s| is_tls(s) == tls)
            .map(|s| (*s).clone())
            .unwrap_or_else(|| panic!("no server tls={tls}"))
    };
    [pick(false), pick(true)]
}

fn location<'a>(server: &'a Directive, path: &str) -> &'a Directive {
    server
        .all("location")
        .find(|l| l.args.last().map(String::as_str) == Some(path))
        .unwrap_or_else(|| panic!("no location {path}"))
}

const ACME: &str = "acme = { email = \"ops@shop.example\" }\n";

#[test]
fn https_listener_has_the_intermediate_profile_http2_and_no_session_tickets() {
    for target in ["nginx+embedded", "nginx+gunicorn", "nginx+uwsgi"] {
        let main = site(ACME, target);
        let [_, https] = servers(&main);
        assert_eq!(https.arg("listen"), "0.0.0.0:443 ssl http2", "{target}");
        assert_eq!(https.arg("ssl_protocols"), "TLSv1.2 TLSv1.3");
        let ciphers = https.arg("ssl_ciphers");
        assert!(ciphers.starts_with("ECDHE-ECDSA-AES128-GCM-SHA256:"), "{ciphers}");
        assert!(!ciphers.contains("CBC") && !ciphers.contains("SHA:"), "{ciphers}");
        let commands: Vec<String> = https.all("ssl_conf_command").map(|d| d.args.join(" ")).collect();
        assert_eq!(
            commands,
            [
                "Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
                "Options PrioritizeChaCha"
            ]
        );
        // This machine's nginx runs OpenSSL 3.0: the post-quantum group is left out.
        assert!(https.arg("ssl_ecdh_curve").starts_with("X25519:prime256v1"));
        assert_eq!(https.arg("ssl_session_tickets"), "off");
        // The server's order (testssl grades none HIGH), ChaCha20 kept for clients preferring it.
        assert_eq!(https.arg("ssl_prefer_server_ciphers"), "on");
        assert_eq!(https.arg("server_tokens"), "off");
        assert_eq!(
            https.arg("ssl_certificate"),
            "/var/lib/deployctl/shop/tls/live/fullchain.pem"
        );
        assert_eq!(
            https.arg("ssl_certificate_key"),
            "/var/lib/deployctl/shop/tls/live/privkey.pem"
        );
    }
}

#[test]
fn modern_is_tls_1_3_only_without_tls_1_2_ciphers() {
    let main = site(&format!("{ACME}profile = \"modern\"\n"), "nginx+gunicorn");
    let [_, https] = servers(&main);
    assert_eq!(https.arg("ssl_protocols"), "TLSv1.3");
    assert_eq!(https.all("ssl_ciphers").count(), 0);
}

#[test]
fn hsts_is_two_years_on_every_answer_and_the_apps_own_is_replaced() {
    let main = site(ACME, "nginx+gunicorn");
    let [http, https] = servers(&main);
    let headers = https.headers();
    assert_eq!(
        headers["Strict-Transport-Security"],
        "max-age=63072000; includeSubDomains"
    );
    // `always`: on errors too; at server level, and no location adds headers of its own, so
    // static files carry it.
    let hsts = https
        .all("add_header")
        .find(|d| d.args[0] == "Strict-Transport-Security")
        .expect("HSTS");
    assert_eq!(hsts.args.last().map(String::as_str), Some("always"));
    for l in https.all("location") {
        assert_eq!(l.all("add_header").count(), 0, "{:?}", l.args);
    }
    let app = location(&https, "/");
    assert_eq!(app.arg("proxy_hide_header"), "Strict-Transport-Security");
    // Never on plain HTTP (browsers ignore it there).
    assert!(!http.headers().contains_key("Strict-Transport-Security"));

    let preload = site(&format!("{ACME}hsts = \"1y\"\nhsts_preload = true\n"), "nginx+gunicorn");
    let [_, https] = servers(&preload);
    assert_eq!(
        https.headers()["Strict-Transport-Security"],
        "max-age=31536000; includeSubDomains; preload"
    );
    let off = site(&format!("{ACME}hsts = \"off\"\n"), "nginx+uwsgi");
    let [_, https] = servers(&off);
    assert!(!https.headers().contains_key("Strict-Transport-Security"));
    assert_eq!(location(&https, "/").all("uwsgi_hide_header").count(), 0);
}

#[test]
fn the_backend_is_told_https() {
    let main = site(ACME, "nginx+gunicorn");
    let [_, https] = servers(&main);
    let headers: std::collections::BTreeMap<String, String> = location(&https, "/")
        .all("proxy_set_header")
        .map(|d| (d.args[0].clone(), d.args[1].clone()))
        .collect();
    assert_eq!(headers["X-Forwarded-Proto"], "https");
    let main = site(ACME, "nginx+uwsgi");
    let [_, https] = servers(&main);
    let params: std::collections::BTreeMap<String, String> = location(&https, "/")
        .all("uwsgi_param")
        .map(|d| (d.args[0].clone(), d.args[1].clone()))
        .collect();
    assert_eq!(params["HTTP_X_FORWARDED_PROTO"], "https");
}

#[test]
fn http_serves_only_acme_challenges_and_redirects_the_rest() {
    let main = site(ACME, "nginx+embedded");
    let [http, _] = servers(&main);
    assert_eq!(http.arg("listen"), "0.0.0.0:80");
    assert_eq!(http.arg("server_name"), "shop.example www.shop.example");
    let locations: Vec<String> = http.all("location").map(|l| l.args.join(" ")).collect();
    assert_eq!(locations, ["^~ /.well-known/acme-challenge/", "/"]);
    let challenge = location(&http, "/.well-known/acme-challenge/");
    assert_eq!(challenge.arg("root"), "/var/lib/deployctl/shop/acme");
    assert_eq!(location(&http, "/").arg("return"), "301 https://$host$request_uri");
    // On another port than 443, the redirect names it.
    let main = site(&format!("{ACME}listen = \"0.0.0.0:8443\"\n"), "nginx+embedded");
    let [http, _] = servers(&main);
    assert_eq!(location(&http, "/").arg("return"), "301 https://$host:8443$request_uri");
}

#[test]
fn the_users_files_are_read_where_they_are() {
    let main = site(
        "certificate = \"/etc/ssl/shop/fullchain.pem\"\nkey = \"/etc/ssl/shop/privkey.pem\"\n",
        "nginx+gunicorn",
    );
    let [_, https] = servers(&main);
    assert_eq!(https.arg("ssl_certificate"), "/etc/ssl/shop/fullchain.pem");
    assert_eq!(https.arg("ssl_certificate_key"), "/etc/ssl/shop/privkey.pem");
}

#[test]
fn a_server_without_a_certificate_source_or_a_front_is_refused() {
    let dir = project(&spec_text(""), &["static"]);
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "--target", "nginx+gunicorn"])
        .run()
        .failure();
    assert!(run.stderr.contains("needs a certificate"), "{}", run.stderr);
    let dir = project(&spec_text(ACME), &["static"]);
    let run = Cli::new(dir.path())
        .args(["render", "--stdout", "--target", "gunicorn"])
        .run()
        .failure();
    assert!(run.stderr.contains("needs a front"), "{}", run.stderr);
}

#[test]
fn check_passes_with_tls() {
    let dir = project(&spec_text(ACME), &["static"]);
    for target in ["nginx+embedded", "nginx+uwsgi"] {
        let run = Cli::new(dir.path())
            .args(["check", "--target", target])
            .env("DEPLOYCTL_REQUIRE_VALIDATORS", "1")
            .run();
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(text.contains("nginx -t nginx/shop.conf: syntax ok"), "{text}");
        assert!(text.contains("gixy nginx/shop.conf: 0 findings"), "{text}");
        // The renewal units, verified, the service as hardened as the app's.
        for unit in ["shop-cert.service", "shop-cert.timer"] {
            assert!(
                text.contains(&format!("systemd-analyze verify systemd/{unit}: no errors or warnings")),
                "{text}"
            );
        }
        assert!(
            text.contains("systemd-analyze security systemd/shop-cert.service: exposure"),
            "{text}"
        );
    }
}

#[test]
fn acme_on_a_server_renders_a_daily_renewal_unit_running_deployctl_cert() {
    let dir = project(&spec_text(ACME), &["static"]);
    let files = render(dir.path(), "nginx+gunicorn");
    let service = &files["systemd/shop-cert.service"];
    let timer = &files["systemd/shop-cert.timer"];
    let line = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
            .to_string()
    };
    assert_eq!(line(service, "Type"), "oneshot");
    let exec = line(service, "ExecStart");
    assert!(
        exec.ends_with(&format!(
            "cert --config {}/deploy.toml --target nginx+gunicorn --no-reload",
            dir.path().display()
        )),
        "{exec}"
    );
    assert_eq!(
        line(service, "ExecStartPost"),
        "+/usr/bin/systemctl reload nginx.service"
    );
    assert_eq!(line(service, "StateDirectory"), "deployctl/shop");
    assert_eq!(line(timer, "OnCalendar"), "daily");
    assert_eq!(line(timer, "RandomizedDelaySec"), "1h");
    assert_eq!(line(timer, "Persistent"), "true");
    assert_eq!(line(timer, "Unit"), "shop-cert.service");
    // Files of the user's own: nothing to renew.
    let dir = project(
        &spec_text("certificate = \"/etc/ssl/a.pem\"\nkey = \"/etc/ssl/a.key\"\n"),
        &["static"],
    );
    let files = render(dir.path(), "nginx+gunicorn");
    assert!(!files.contains_key("systemd/shop-cert.service"));
}

#[test]
fn snapshot_of_a_tls_spec_with_pinned_capabilities() {
    // The renewal unit runs `[systemd].deployctl`, by default this executable (the test's).
    let text = format!(
        "{}\n[systemd]\ndeployctl = \"/usr/local/bin/deployctl\"\n",
        spec_text(ACME)
    );
    let dir = project(&text, &["static"]);
    let spec = deployctl::spec::Spec::load(&dir.path().join("deploy.toml")).expect("a valid spec");
    let templates = deployctl::render::Templates::load(None).expect("templates");
    for (target, name) in [
        ("nginx+gunicorn", "tls__nginx-gunicorn"),
        ("nginx+uwsgi", "tls__nginx-uwsgi"),
        ("apache+gunicorn", "tls__apache-gunicorn"),
        ("apache+mod_wsgi", "tls__apache-mod_wsgi"),
    ] {
        let plan = Plan::resolve(
            &spec,
            target.parse().expect("a target"),
            Environment::Production {
                out: dir.path().join("deploy").join(target),
            },
        )
        .with_tls_capabilities(Capabilities {
            openssl: OpensslVersion(3, 0, 19),
            http2: true,
            // Debian 12's nginx 1.22: `listen … ssl http2`.
            http2_directive: false,
        });
        let tree = deployctl::render::render_plan(&plan, &templates).expect("renders");
        let listing = tree.listing().replace(&dir.path().display().to_string(), "[PROJECT]");
        let files = split_listing(&listing);
        assert!(files.contains_key("nginx/shop.conf") || files.contains_key("apache/shop.conf"));
        insta::assert_snapshot!(name, filter_paths(&listing));
    }
}

/// How nginx turns HTTP/2 on follows its version, read from `nginx -V`: Debian 12's 1.22 has
/// `listen … ssl http2` only; from 1.25.1 the site says `http2 on;` in each HTTPS server and
/// leaves the deprecated listen parameter out.
#[test]
fn http2_is_spelled_for_the_nginx_version() {
    let dir = project(
        &spec_text("certificate = \"/etc/ssl/a.pem\"\nkey = \"/etc/ssl/a.key\"\n"),
        &["static"],
    );
    let spec = deployctl::spec::Spec::load(&dir.path().join("deploy.toml")).expect("a valid spec");
    let templates = deployctl::render::Templates::load(None).expect("templates");
    for (version, directive) in [("1.22.1", false), ("1.25.1", true), ("1.26.3", true)] {
        let report = format!(
            "nginx version: nginx/{version}\nbuilt with OpenSSL 3.0.19 27 Jan 2026\n\
             configure arguments: --with-http_ssl_module --with-http_v2_module"
        );
        let plan = Plan::resolve(
            &spec,
            "nginx+gunicorn".parse().expect("a target"),
            Environment::Production {
                out: dir.path().join("deploy"),
            },
        )
        .with_tls_capabilities(Capabilities::of_nginx(&report).expect("capabilities"));
        let tree = deployctl::render::render_plan(&plan, &templates).expect("renders");
        let files = split_listing(&tree.listing());
        let main = parse::nginx(&files["nginx/shop.conf"]);
        let [_, https] = servers(&main);
        let listen_h2 = https.one("listen").args.iter().any(|a| a == "http2");
        assert_eq!(listen_h2, !directive, "{version}: {:?}", https.one("listen").args);
        let on: Vec<_> = https.all("http2").map(|d| d.args.clone()).collect();
        let want: Vec<Vec<String>> = if directive { vec![vec!["on".into()]] } else { vec![] };
        assert_eq!(on, want, "{version}");
    }
}

#[test]
fn check_all_targets_skips_the_targets_that_cannot_serve_tls_and_says_why() {
    let dir = project(&spec_text(ACME), &["static"]);
    let run = Cli::new(dir.path()).args(["check", "--all-targets"]).run();
    let text = format!("{}{}", run.stdout, run.stderr);
    for lone in ["uwsgi", "gunicorn"] {
        assert!(
            text.contains(&format!("warning: {lone}: skipped: [tls] needs a front")),
            "{text}"
        );
    }
    // The lone embedded server terminates TLS itself and answers HTTP-01 on [server].listen:
    // checked, renewal units included.
    assert!(!text.contains("warning: embedded: skipped"), "{text}");
    assert!(
        text.contains("ok embedded: systemd-analyze verify systemd/shop-cert.service: no errors or warnings"),
        "{text}"
    );
    // Apache terminates TLS with mod_ssl: both shapes through apache2 -t.
    for front in ["apache+gunicorn", "apache+uwsgi", "apache+embedded", "apache+mod_wsgi"] {
        for file in ["apache/shop.conf", "apache/httpd.conf"] {
            assert!(
                text.contains(&format!("{front}: apache2 -t {file}: syntax ok")),
                "{text}"
            );
        }
    }
    for front in ["nginx+embedded", "nginx+uwsgi", "nginx+gunicorn"] {
        assert!(
            text.contains(&format!("{front}: nginx -t nginx/shop.conf: syntax ok")),
            "{text}"
        );
    }
}

/// Both shapes of Apache's configuration for `target`: (the Debian site, the self-contained
/// `httpd.conf`).
fn apache_files(tls: &str, target: &str) -> (Directive, Directive) {
    let dir = project(&spec_text(tls), &["static"]);
    let files = render(dir.path(), target);
    (
        parse::apache(&files["apache/shop.conf"]),
        parse::apache(&files["apache/httpd.conf"]),
    )
}

/// The virtual hosts of an Apache TLS configuration: (HTTP catch-all, HTTP site, HTTPS
/// catch-all, HTTPS site), in the order Apache reads them (the first of an address is its
/// default).
fn apache_vhosts(main: &Directive) -> [Directive; 4] {
    let all: Vec<Directive> = main.all("VirtualHost").cloned().collect();
    assert_eq!(all.len(), 4, "{all:?}");
    [all[0].clone(), all[1].clone(), all[2].clone(), all[3].clone()]
}

fn args_of(block: &Directive, name: &str) -> Vec<Vec<String>> {
    block.all(name).map(|d| d.args.clone()).collect()
}

#[test]
fn apache_terminates_tls_with_mod_ssl_in_both_shapes() {
    for target in ["apache+gunicorn", "apache+mod_wsgi"] {
        let (site, httpd) = apache_files(ACME, target);
        for conf in [&site, &httpd] {
            let [http_default, http, tls_default, tls] = apache_vhosts(conf);
            assert_eq!(http_default.args, ["*:80"], "{target}");
            assert_eq!(http.args, ["*:80"], "{target}");
            assert_eq!(tls_default.args, ["*:443"], "{target}");
            assert_eq!(tls.args, ["*:443"], "{target}");
            // The catch-alls answer no name of the site; the HTTPS one refuses every request.
            for d in [&http_default, &tls_default] {
                assert_eq!(d.arg("ServerName"), "default.invalid", "{target}");
                let loc = d.one("Location");
                assert_eq!(loc.arg("Require"), "all denied", "{target}");
            }
            // The profile, in both HTTPS virtual hosts (the first decides the handshake).
            for d in [&tls_default, &tls] {
                assert_eq!(d.arg("SSLEngine"), "on", "{target}");
                assert_eq!(d.arg("SSLProtocol"), "-all +TLSv1.2 +TLSv1.3", "{target}");
                assert_eq!(
                    args_of(d, "SSLCipherSuite"),
                    [
                        vec![
                            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
                             ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
                                .to_string()
                        ],
                        vec![
                            "TLSv1.3".to_string(),
                            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256".to_string()
                        ],
                    ],
                    "{target}"
                );
                let conf_cmds = args_of(d, "SSLOpenSSLConfCmd");
                assert!(
                    conf_cmds.contains(&vec!["Curves".to_string(), "X25519:prime256v1:secp384r1".to_string()]),
                    "{target}: {conf_cmds:?}"
                );
                assert_eq!(d.arg("SSLSessionTickets"), "off", "{target}");
                assert_eq!(
                    d.arg("SSLCertificateFile"),
                    "/var/lib/deployctl/shop/tls/live/fullchain.pem",
                    "{target}"
                );
                assert_eq!(
                    d.arg("SSLCertificateKeyFile"),
                    "/var/lib/deployctl/shop/tls/live/privkey.pem",
                    "{target}"
                );
            }
            assert_eq!(tls.arg("ServerName"), "shop.example", "{target}");
            assert_eq!(tls.arg("Protocols"), "h2 http/1.1", "{target}");
            let headers = args_of(&tls, "Header");
            assert!(
                headers.contains(&vec![
                    "always".to_string(),
                    "set".to_string(),
                    "Strict-Transport-Security".to_string(),
                    "max-age=63072000; includeSubDomains".to_string()
                ]),
                "{target}: {headers:?}"
            );
            assert!(
                headers.contains(&vec![
                    "onsuccess".to_string(),
                    "unset".to_string(),
                    "Strict-Transport-Security".to_string()
                ]),
                "{target}: the app's own HSTS dropped: {headers:?}"
            );
            // HTTP: the challenge path from the webroot, everything else 301 to https.
            let challenge = "/var/lib/deployctl/shop/acme/.well-known/acme-challenge/";
            assert_eq!(
                args_of(&http, "Alias"),
                [vec!["/.well-known/acme-challenge/".to_string(), challenge.to_string()]],
                "{target}"
            );
            assert_eq!(http.one("Directory").args, [challenge], "{target}");
            assert_eq!(
                args_of(&http, "RewriteRule"),
                [
                    vec![
                        "^/\\.well-known/acme-challenge/".to_string(),
                        "-".to_string(),
                        "[L]".to_string()
                    ],
                    vec![
                        "^".to_string(),
                        "https://%{SERVER_NAME}%{REQUEST_URI}".to_string(),
                        "[R=301,L]".to_string()
                    ],
                ],
                "{target}"
            );
            assert!(
                http.all("ProxyPass").next().is_none(),
                "{target}: nothing proxied on HTTP"
            );
            assert!(http.all("WSGIScriptAlias").next().is_none(), "{target}: no app on HTTP");
        }
        // The backend is told https.
        let [_, _, _, tls] = apache_vhosts(&httpd);
        if target == "apache+gunicorn" {
            assert!(
                args_of(&tls, "RequestHeader").contains(&vec![
                    "set".to_string(),
                    "X-Forwarded-Proto".to_string(),
                    "https".to_string()
                ]),
                "{target}"
            );
        }
        // The self-contained file listens on both, with the modules and a session cache.
        assert_eq!(
            args_of(&httpd, "Listen"),
            [vec!["0.0.0.0:80"], vec!["0.0.0.0:443", "https"]],
            "{target}"
        );
        let modules: Vec<String> = httpd.all("LoadModule").map(|d| d.args[0].clone()).collect();
        for m in [
            "ssl_module",
            "socache_shmcb_module",
            "rewrite_module",
            "http2_module",
            "headers_module",
        ] {
            assert!(modules.contains(&m.to_string()), "{target}: {m} in {modules:?}");
        }
        assert!(httpd.arg("SSLSessionCache").starts_with("shmcb:"), "{target}");
        // Debian's ports.conf listens on 80 and 443: the site adds no Listen.
        assert!(site.all("Listen").next().is_none(), "{target}");
    }
}

#[test]
fn apache_modern_is_tls_1_3_only_and_a_site_off_443_listens_itself() {
    let (site, httpd) = apache_files(
        "listen = \"0.0.0.0:8443\"\nprofile = \"modern\"\nhsts = \"off\"\ncertificate = \"/etc/ssl/a.pem\"\nkey = \"/etc/ssl/a.key\"\n",
        "apache+gunicorn",
    );
    for conf in [&site, &httpd] {
        let [_, http, tls_default, tls] = apache_vhosts(conf);
        for d in [&tls_default, &tls] {
            assert_eq!(d.arg("SSLProtocol"), "-all +TLSv1.3");
            assert_eq!(args_of(d, "SSLCipherSuite").len(), 1, "TLS 1.3's suites only");
            assert_eq!(d.arg("SSLCertificateFile"), "/etc/ssl/a.pem");
            assert_eq!(d.args, ["*:8443"]);
        }
        let headers = args_of(&tls, "Header");
        assert!(
            !headers
                .iter()
                .any(|h| h.contains(&"Strict-Transport-Security".to_string())),
            "{headers:?}"
        );
        assert_eq!(
            args_of(&http, "RewriteRule")[1][1],
            "https://%{SERVER_NAME}:8443%{REQUEST_URI}"
        );
    }
    assert_eq!(args_of(&site, "Listen"), [vec!["0.0.0.0:8443", "https"]]);
}

#[test]
fn apache_check_passes_with_tls_on_a_placeholder_pair() {
    let dir = project(&spec_text(ACME), &["static"]);
    for target in ["apache+gunicorn", "apache+mod_wsgi"] {
        let run = Cli::new(dir.path()).args(["check", "--target", target]).run();
        let text = format!("{}{}", run.stdout, run.stderr);
        for file in ["apache/shop.conf", "apache/httpd.conf"] {
            assert!(
                text.contains(&format!("apache2 -t {file}: syntax ok")),
                "{target}: {text}"
            );
        }
        assert!(
            text.contains("systemd-analyze verify systemd/shop-cert.service: no errors"),
            "{target}: {text}"
        );
    }
    // The renewal unit reloads Apache.
    let files = render(dir.path(), "apache+gunicorn");
    let service = &files["systemd/shop-cert.service"];
    assert!(
        service.contains("ExecStartPost=+/usr/bin/systemctl reload apache2.service"),
        "{service}"
    );
    assert!(
        service.contains("After=network-online.target apache2.service"),
        "{service}"
    );
    // render's hint lists the modules to enable.
    let site = &files["apache/shop.conf"];
    assert!(site.contains("ssl socache_shmcb"), "{site}");
}
