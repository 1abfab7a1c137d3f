//! The serde model of `deploy.toml`, exactly as written.
//!
//! Owns: the shape of the file (which tables and keys exist, their TOML types) and the
//! source span of every value, so later checks can point at a line and column.
//! Does not own: defaults, paths, or any rule spanning two keys — that is `resolve.rs`.
//! Every table denies unknown keys, so a typo is an error with a position, not a silent no-op.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub app: RawApp,
    pub server: Option<RawServer>,
    #[serde(default, rename = "static")]
    pub statics: Vec<S<RawStatic>>,
    pub backend: Option<RawBackend>,
    pub frontend: Option<RawFrontend>,
    pub health: Option<RawHealth>,
    pub systemd: Option<RawSystemd>,
    pub render: Option<RawRender>,
    pub tls: Option<S<RawTls>>,
    pub cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<S<String>>,
    pub entry: S<String>,
    pub root: Option<S<String>>,
    pub venv: Option<S<String>>,
    pub requirements: Option<S<String>>,
    pub env: Option<S<BTreeMap<String, String>>>,
    pub secret_env: Option<S<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub names: Option<S<Vec<String>>>,
    pub listen: Option<S<String>>,
    pub max_body: Option<S<SizeOrInt>>,
    pub timeout: Option<S<DurationOrInt>>,
    pub forwarded_allow_ips: Option<S<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatic {
    pub url: S<String>,
    pub dir: S<String>,
    pub expires: Option<S<DurationOrInt>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub kind: Option<S<String>>,
    pub workers: Option<S<Workers>>,
    pub threads: Option<S<i64>>,
    pub graceful_timeout: Option<S<DurationOrInt>>,
    pub uwsgi_build: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    pub kind: Option<S<String>>,
    pub group: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<S<String>>,
    pub expect: Option<S<i64>>,
    pub timeout: Option<S<DurationOrInt>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystemd {
    pub user: Option<S<String>>,
    pub group: Option<S<String>>,
    pub deployctl: Option<S<String>>,
    pub memory_deny_write_execute: Option<bool>,
    pub private_users: Option<bool>,
    pub deny_resource_syscalls: Option<bool>,
    pub localhost_only: Option<bool>,
    pub read_write_paths: Option<S<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRender {
    pub templates: Option<S<String>>,
    pub out: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<S<String>>,
    pub certificate: Option<S<String>>,
    pub key: Option<S<String>>,
    pub acme: Option<S<RawAcme>>,
    pub profile: Option<S<String>>,
    /// `"2y"`, `"off"`, or a number of seconds.
    pub hsts: Option<S<DurationOrInt>>,
    pub hsts_preload: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub email: Option<S<String>>,
    pub directory: Option<S<String>>,
    pub ca: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub image: Option<S<String>>,
    pub replicas: Option<S<i64>>,
    pub min_replicas: Option<S<i64>>,
    pub max_replicas: Option<S<i64>>,
    pub cpu: Option<S<Quantity>>,
    pub memory: Option<S<SizeOrInt>>,
    pub namespace: Option<S<String>>,
}

/// A CPU amount: `"250m"`, `"0.5"`, `0.5` or a whole number of cores.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a CPU amount such as \"250m\", \"0.5\" or a number of cores")]
pub enum Quantity {
    Text(String),
    Int(i64),
    Float(f64),
}

/// `"10M"` or a plain number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a size such as \"10M\" or a number of bytes")]
pub enum SizeOrInt {
    Text(String),
    Int(i64),
}

/// `"30s"` or a plain number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a duration such as \"30s\" or a number of seconds")]
pub enum DurationOrInt {
    Text(String),
    Int(i64),
}

/// `"auto"` or a number of worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(i64),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of workers")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Workers, E> {
                Ok(Workers::Count(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                if v == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}
