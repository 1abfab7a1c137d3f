//! Every default of `deploy.toml` and of the embedded server's settings, in one place.
//!
//! Owns: the value a key or flag takes when it is not given, each documented with the key and
//! flag it belongs to. `spec::resolve` and `settings` read them from here and nowhere else,
//! so `deploy.toml`, `deployctl serve` and `deployctl-server` cannot disagree (the README's
//! reference and the `--help` texts state the same values). Does not own: defaults that are
//! found rather than chosen — `[app].name` (the directory's name), `[app].root` (the
//! directory of `deploy.toml`), `serve --venv` (`$VIRTUAL_ENV`), `serve --chdir` (the current
//! directory) — which are computed where they are resolved.

use crate::settings::{AccessLogFormat, LogLevel, Protocol};
use crate::spec::{Listen, Seconds, Size, TlsProfile, UwsgiBuild};
use crate::target::{Backend, Frontend};

// -- [app] ----------------------------------------------------------------------------------

/// `[app].venv`, relative to `deploy.toml`.
pub const VENV: &str = ".venv";
/// `[app].requirements`: this file next to `deploy.toml`, when there is one.
pub const REQUIREMENTS: &str = "requirements.txt";

// -- [server], and the embedded server's flags of the same meaning --------------------------

/// The security headers of deployctl's policy, each sent only when the app sent none of
/// that name: by the nginx and Apache fronts, and by the embedded server at the edge
/// (`--security-headers`; always on its own static answers).
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

/// `[server].names`.
pub const SERVER_NAMES: [&str; 1] = ["localhost"];

/// `[server].listen`: `0.0.0.0:80`.
pub fn listen() -> Listen {
    Listen {
        host: "0.0.0.0".into(),
        port: 80,
    }
}

/// `[server].max_body`, and `serve --max-body`: 10 MiB.
pub const MAX_BODY: Size = Size(10 << 20);
/// `[server].timeout`, and `serve --timeout`: 30 s.
pub const TIMEOUT: Seconds = Seconds(30);
/// `[server].forwarded_allow_ips`, and `serve --forwarded-allow-ips`: loopback.
pub const FORWARDED_ALLOW_IPS: [&str; 2] = ["127.0.0.1", "::1"];

// -- [[static]] -----------------------------------------------------------------------------

/// `[[static]].expires`: 7 days.
pub const STATIC_EXPIRES: Seconds = Seconds(7 * 86_400);

// -- [backend], and the embedded server's flags of the same meaning -------------------------

/// `[backend].kind`.
pub const BACKEND: Backend = Backend::Embedded;

/// `[backend].workers = "auto"` (the default), and `serve --workers`: one per CPU available to
/// the process, decided where the server starts.
pub fn workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// `[backend].threads`, and `serve --threads`.
pub const THREADS: u32 = 1;
/// `[backend].graceful_timeout`, and `serve --graceful-timeout`: 30 s.
pub const GRACEFUL_TIMEOUT: Seconds = Seconds(30);
/// `[backend].uwsgi_build`.
pub const UWSGI_BUILD: UwsgiBuild = UwsgiBuild::Debian;

// -- [frontend] -----------------------------------------------------------------------------

/// `[frontend].kind`.
pub const FRONTEND: Frontend = Frontend::Nginx;
/// `[frontend].group`: Debian's web server group.
pub const FRONTEND_GROUP: &str = "www-data";

// -- [health] -------------------------------------------------------------------------------

/// `[health].path`.
pub const HEALTH_PATH: &str = "/";
/// `[health].timeout`: 10 s. (`[health].expect` has no default value: without it any status
/// below 500 is healthy.)
pub const HEALTH_TIMEOUT: Seconds = Seconds(10);

// -- [systemd] ------------------------------------------------------------------------------

/// `[systemd].user` and `[systemd].group`.
pub const SYSTEMD_ACCOUNT: &str = "www-data";
/// `[systemd].deployctl` when the running executable's path cannot be found (its default is
/// that path).
pub const DEPLOYCTL_BIN: &str = "/usr/local/bin/deployctl";
/// `[systemd].memory_deny_write_execute`.
pub const MEMORY_DENY_WRITE_EXECUTE: bool = true;
/// `[systemd].private_users`.
pub const PRIVATE_USERS: bool = true;
/// `[systemd].deny_resource_syscalls`.
pub const DENY_RESOURCE_SYSCALLS: bool = true;
/// `[systemd].localhost_only`.
pub const LOCALHOST_ONLY: bool = false;

// -- [tls] ----------------------------------------------------------------------------------

/// `[tls].listen`: `0.0.0.0:443`.
pub fn tls_listen() -> Listen {
    Listen {
        host: "0.0.0.0".into(),
        port: 443,
    }
}
/// `[tls].profile`: Mozilla's intermediate (TLS 1.2 and 1.3).
pub const TLS_PROFILE: TlsProfile = TlsProfile::Intermediate;
/// `[tls].hsts`: two years, Mozilla's guidelines' minimum (`max-age=63072000`).
pub const HSTS: Seconds = Seconds(63_072_000);
/// `[tls].acme.directory`: Let's Encrypt's production directory.
pub const ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

// -- [render] -------------------------------------------------------------------------------

/// `[render].out`, relative to `deploy.toml`.
pub const RENDER_OUT: &str = "deploy";

// -- [cluster] ------------------------------------------------------------------------------

/// `[cluster].image`: what `docker build -t NAME` tags.
pub fn cluster_image(name: &str) -> String {
    format!("{}:latest", name.to_ascii_lowercase())
}
/// `[cluster].replicas` (and `min_replicas`'s default; `max_replicas`'s is twice that): two,
/// so that one pod can be drained or lost without downtime.
pub const CLUSTER_REPLICAS: u32 = 2;
/// `[cluster].cpu`: a quarter of a core, requested per pod.
pub const CLUSTER_CPU_MILLI: u64 = 250;
/// `[cluster].memory`: 256 MiB per pod, requested and the limit.
pub const CLUSTER_MEMORY: Size = Size(256 << 20);

// -- The embedded server's own flags --------------------------------------------------------

/// `serve --bind` without `--config`.
pub const BIND: &str = "127.0.0.1:8000";
/// `serve --uds-mode`, in octal as written on the command line.
pub const UDS_MODE: &str = "660";
/// `serve --protocol`.
pub const PROTOCOL: Protocol = Protocol::Http;
/// `serve --max-requests`: 0, never recycled by count.
pub const MAX_REQUESTS: u64 = 0;
/// `serve --max-requests-jitter`: 0, no jitter.
pub const MAX_REQUESTS_JITTER: u64 = 0;
/// `serve --max-lifetime`: 0, never recycled by age.
pub const MAX_LIFETIME: u64 = 0;
/// `serve --keep-alive`: seconds an idle keep-alive connection is kept.
pub const KEEP_ALIVE: u64 = 5;
/// `serve --header-timeout`: seconds to send a whole request head.
pub const HEADER_TIMEOUT: u64 = 10;
/// `serve --body-timeout`: seconds a body or response may go without progress.
pub const BODY_TIMEOUT: u64 = 30;
/// `serve --access-log-format`.
pub const ACCESS_LOG_FORMAT: AccessLogFormat = AccessLogFormat::Common;
/// `serve --limit-request-line`: RFC 9112 §3 recommends at least 8000; nginx accepts 8 KiB.
pub const LIMIT_REQUEST_LINE: usize = 8190;
/// `serve --limit-request-fields`.
pub const LIMIT_REQUEST_FIELDS: usize = 100;
/// `serve --limit-request-field-size`.
pub const LIMIT_REQUEST_FIELD_SIZE: usize = 8190;
/// `serve --body-buffer`: 1 MiB read ahead by the event loop.
pub const BODY_BUFFER: Size = Size(1 << 20);
/// `serve --min-rate`: 1 KiB/s after the first `--body-timeout`.
pub const MIN_RATE: Size = Size(1 << 10);
/// `serve --log-level`.
pub const LOG_LEVEL: LogLevel = LogLevel::Info;

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::*;
    use crate::settings::ServeArgs;
    use crate::spec::parse_size;

    /// The `--help` texts state defaults in words ("Default: 30."); they must be these.
    #[test]
    fn the_help_texts_state_these_defaults() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let stated = |id: &str| -> String {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).expect(id);
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let after = help
                .split("Default: ")
                .nth(1)
                .unwrap_or_else(|| panic!("--{id}: {help:?}"));
            let word = after.split_whitespace().next().unwrap_or_default();
            word.trim_end_matches('.').to_string()
        };
        let number = |id: &str| {
            stated(id)
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("--{id}: {}", stated(id)))
        };
        let size = |id: &str| parse_size(&stated(id)).unwrap_or_else(|e| panic!("--{id}: {e}"));
        assert_eq!(stated("bind"), BIND);
        assert_eq!(number("threads"), u64::from(THREADS));
        assert_eq!(number("timeout"), TIMEOUT.0);
        assert_eq!(number("graceful_timeout"), GRACEFUL_TIMEOUT.0);
        assert_eq!(number("max_requests"), MAX_REQUESTS);
        assert_eq!(number("max_requests_jitter"), MAX_REQUESTS_JITTER);
        assert_eq!(number("max_lifetime"), MAX_LIFETIME);
        assert_eq!(number("keep_alive"), KEEP_ALIVE);
        assert_eq!(number("header_timeout"), HEADER_TIMEOUT);
        assert_eq!(number("body_timeout"), BODY_TIMEOUT);
        assert_eq!(number("limit_request_line"), LIMIT_REQUEST_LINE as u64);
        assert_eq!(number("limit_request_fields"), LIMIT_REQUEST_FIELDS as u64);
        assert_eq!(number("limit_request_field_size"), LIMIT_REQUEST_FIELD_SIZE as u64);
        assert_eq!(size("max_body"), MAX_BODY);
        assert_eq!(size("body_buffer"), BODY_BUFFER);
        assert_eq!(size("min_rate"), MIN_RATE);
        assert_eq!(stated("forwarded_allow_ips"), FORWARDED_ALLOW_IPS.join(","));
        let name = clap::ValueEnum::to_possible_value(&LOG_LEVEL).map(|v| v.get_name().to_string());
        assert_eq!(Some(stated("log_level")), name);
    }
}
