//! deployctl's policy values: the numbers it chooses for every deployment, each with its
//! reason. Views copy them into the files; templates hold none. Per-deployment values come
//! from `deploy.toml` instead.

/// How much longer a tier waits for the one behind it than that one's own request timeout,
/// per hop: a backend that times out answers with its own error before the front gives up
/// (504). A front two hops out waits twice the slack.
pub const HOP_TIMEOUT_SLACK_SECS: u64 = 5;

/// How long a component gets past its graceful timeout before what is left is killed:
/// systemd's `TimeoutStopSec=` and `deployctl up`'s stop. Its own constant: stopping is not a
/// proxy waiting for an answer, even though both are 5 s today.
pub const STOP_SLACK_SECS: u64 = 5;

/// How long nginx gets to stop gracefully (QUIT) in a local run before it is killed: its
/// workers finish requests in flight, which the app's own timeout already bounds.
pub const FRONT_STOP_SECS: u64 = 10;

/// mod_wsgi's daemon processes when `[backend].workers` is `auto`: Apache's configuration
/// cannot count CPUs at start (Gunicorn's and uWSGI's can), so the count is fixed when it is
/// rendered; two processes keep the app serving while one is recycled.
pub const MOD_WSGI_AUTO_PROCESSES: u32 = 2;

/// `worker_connections` of the one nginx worker of a local run (`up`): each proxied client
/// takes two (its own and the upstream one), and nginx's default of 512 refused clients past
/// about 256 (seen with 512 wrk connections: `512 worker_connections are not enough`).
pub const LOCAL_NGINX_WORKER_CONNECTIONS: u32 = 4096;

/// How long a front waits to connect to the tier behind it: a local socket answers at once,
/// a backend not accepting in 5 s is down (502 rather than a hung client).
pub const CONNECT_TIMEOUT_SECS: u64 = 5;

/// nginx upstream keep-alive pool; must be at least the expected concurrency
/// (reference deploy-configs.md §1 row 21).
pub const UPSTREAM_KEEPALIVE: u32 = 64;

/// Gunicorn's `keepalive`: seconds an idle client connection stays open. Gunicorn's default
/// (2 s) is for a server behind a front; alone it faces browsers, which reuse a connection
/// for a few seconds between requests.
pub const GUNICORN_KEEPALIVE_SECS: u32 = 5;

/// Longest request line a backend accepts (414 above). 8190, not Gunicorn's own default of
/// 4094: nginx in front accepts request lines up to its 8 KiB header buffer
/// (`large_client_header_buffers 4 8k`), RFC 9112 §3 recommends at least 8000 octets, and the
/// embedded server's default is 8190 — a backend refusing what the front forwarded would
/// turn long URLs into errors only some targets give.
pub const REQUEST_LINE_LIMIT: u32 = 8190;

/// Most header fields in a request (the embedded server's and Gunicorn's default).
pub const REQUEST_FIELDS_LIMIT: u32 = 100;

/// Longest header field line (the embedded server's and Gunicorn's default; nginx's 8 KiB
/// buffer).
pub const REQUEST_FIELD_SIZE_LIMIT: u32 = 8190;

/// uWSGI `post-buffering`: bodies above 64 KiB are buffered to disk before the app runs, so
/// a slow client does not hold a worker (nginx buffers bodies itself, uWSGI alone does not).
pub const UWSGI_POST_BUFFERING: u32 = 65536;

/// uWSGI `buffer-size`: the request header buffer (its 4 KiB default refuses the headers of
/// an app with a few cookies with a 502 behind nginx).
pub const UWSGI_BUFFER_SIZE: u32 = 16384;

/// `LimitNOFILE=` of the units: every connection is a descriptor, systemd's default soft
/// limit (1024) caps a worker at about that many clients, and the hardening denies the
/// server the setrlimit call that would raise it.
pub const UNIT_NOFILE: u32 = 65536;

/// `Backlog=` of the socket units: connections queued while every worker is busy or the
/// backend restarts (the kernel default of 128 drops a burst).
pub const SOCKET_BACKLOG: u32 = 1024;

/// `RestartSec=`: a crashed service is restarted after 1 s.
pub const RESTART_SECS: u32 = 1;

// -- The cluster targets (`kubernetes`, `compose`) --------------------------------------------

/// The `preStop` pause of a pod: after a pod is marked terminating, kube-proxy and the
/// ingress controller take a few seconds to stop sending it requests; the server gets TERM
/// only after that, so no request reaches a pod that has stopped accepting.
pub const DRAIN_SECS: u64 = 5;

/// The startup probe's period, and how long the app gets to load before the kubelet gives up
/// on it (importing a large Django project takes seconds; the liveness probe only starts
/// once this one passed).
pub const STARTUP_PROBE_PERIOD_SECS: u64 = 2;
pub const STARTUP_BUDGET_SECS: u64 = 60;

/// The readiness probe: a pod failing two in a row (10 s) is taken out of the Service.
pub const READINESS_PROBE_PERIOD_SECS: u64 = 5;
pub const READINESS_FAILURES: u64 = 2;

/// The liveness probe: three failures in a row (30 s) restart the container — longer than
/// readiness, so a busy pod is first taken out of rotation, not killed.
pub const LIVENESS_PROBE_PERIOD_SECS: u64 = 10;
pub const LIVENESS_FAILURES: u64 = 3;

/// The autoscaler's target: the average CPU use of the pods, as a share of their request.
pub const HPA_CPU_UTILIZATION: u32 = 70;

/// The rolling update's extra pod: one new pod at a time, none of the old taken down before
/// it is ready (`maxUnavailable: 0`).
pub const ROLLING_MAX_SURGE: u32 = 1;
