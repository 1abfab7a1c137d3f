//! Targets: the chain of servers from the edge inward, e.g. `nginx+uwsgi`.
//!
//! Owns: a target as the frontend/backend pair that `deploy.toml` (`[frontend].kind`,
//! `[backend].kind`: the default target), state files and run directories name; the chains of
//! design.md and which of them are implemented. A target is what `render`, `check` and `up`
//! are asked for. Does not own: reading `--target` (the CLI reads it as a chain of tiers with
//! rules on adjacent tiers, `deployctl::plan::chain`, whose tests check that it agrees with
//! this list) or what a target renders and runs (`deployctl::plan`).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frontend {
    None,
    Nginx,
    Apache,
    NginxApache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Embedded,
    Uwsgi,
    Gunicorn,
    ModWsgi,
}

impl Frontend {
    pub const ALL: [Frontend; 4] = [Frontend::None, Frontend::Nginx, Frontend::Apache, Frontend::NginxApache];

    pub fn name(self) -> &'static str {
        match self {
            Frontend::None => "none",
            Frontend::Nginx => "nginx",
            Frontend::Apache => "apache",
            Frontend::NginxApache => "nginx+apache",
        }
    }
}

impl Backend {
    pub const ALL: [Backend; 4] = [Backend::Embedded, Backend::Uwsgi, Backend::Gunicorn, Backend::ModWsgi];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Uwsgi => "uwsgi",
            Backend::Gunicorn => "gunicorn",
            Backend::ModWsgi => "mod_wsgi",
        }
    }
}

/// A frontend/backend chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub frontend: Frontend,
    pub backend: Backend,
}

/// Every chain of design.md §2, in the order help texts list them.
pub const DESIGNED: [Target; 11] = [
    Target::new(Frontend::None, Backend::Embedded),
    Target::new(Frontend::None, Backend::Uwsgi),
    Target::new(Frontend::None, Backend::Gunicorn),
    Target::new(Frontend::Nginx, Backend::Embedded),
    Target::new(Frontend::Nginx, Backend::Uwsgi),
    Target::new(Frontend::Nginx, Backend::Gunicorn),
    Target::new(Frontend::Apache, Backend::ModWsgi),
    Target::new(Frontend::Apache, Backend::Uwsgi),
    Target::new(Frontend::Apache, Backend::Gunicorn),
    Target::new(Frontend::Apache, Backend::Embedded),
    Target::new(Frontend::NginxApache, Backend::ModWsgi),
];

impl Target {
    pub const fn new(frontend: Frontend, backend: Backend) -> Self {
        Target { frontend, backend }
    }

    /// Whether this build can render the chain: every one design.md lists.
    pub fn is_implemented(self) -> bool {
        match self.frontend {
            Frontend::None | Frontend::Nginx => self.backend != Backend::ModWsgi,
            Frontend::Apache => true,
            Frontend::NginxApache => self.backend == Backend::ModWsgi,
        }
    }

    pub fn is_designed(self) -> bool {
        DESIGNED.contains(&self)
    }

    pub fn implemented() -> impl Iterator<Item = Target> {
        DESIGNED.into_iter().filter(|t| t.is_implemented())
    }

    /// `"embedded, uwsgi, …"` for error messages.
    pub fn implemented_list() -> String {
        Target::implemented()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frontend {
            Frontend::None => f.write_str(self.backend.name()),
            fe => write!(f, "{}+{}", fe.name(), self.backend.name()),
        }
    }
}

impl FromStr for Frontend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Frontend::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            format!(
                "unknown frontend {s:?}; expected one of: {}",
                names(Frontend::ALL.map(Frontend::name))
            )
        })
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Backend::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            format!(
                "unknown backend {s:?}; expected one of: {}",
                names(Backend::ALL.map(Backend::name))
            )
        })
    }
}

fn names<const N: usize>(n: [&str; N]) -> String {
    n.join(", ")
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let found = DESIGNED.into_iter().find(|t| t.to_string() == s);
        match found {
            Some(t) if t.is_implemented() => Ok(t),
            Some(t) => Err(format!(
                "target `{t}` is planned but not implemented yet; valid targets: {}",
                Target::implemented_list()
            )),
            None => Err(format!(
                "unknown target `{s}`; valid targets: {}",
                Target::implemented_list()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in DESIGNED {
            let name = t.to_string();
            let parsed = DESIGNED.into_iter().find(|x| x.to_string() == name);
            assert_eq!(parsed, Some(t));
        }
        assert_eq!(
            "nginx+uwsgi".parse::<Target>(),
            Ok(Target::new(Frontend::Nginx, Backend::Uwsgi))
        );
        let err = "nginx+mod_wsgi".parse::<Target>().unwrap_err();
        assert!(err.contains("nginx+gunicorn"), "{err}");
    }
}
