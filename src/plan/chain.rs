//! Targets as chains of tiers, from the edge inward: `nginx+apache+mod_wsgi`.
//!
//! Owns: the tiers `deployctl` knows, the rules on adjacent tiers (which tier may stand
//! directly in front of which, and over what kind of link), which tiers this build renders,
//! and the conversion to and from [`Target`] (the frontend/backend pair that `deploy.toml`,
//! state files and run directories name). Any chain of known tiers parses; an impossible one
//! is an error that says why. Does not own the list of valid targets shown in messages
//! (`Target::implemented_list`).
//!
//! Every match on [`Tier`] here and in the plan is exhaustive: a new tier does not compile
//! until each place says what it does with it.

use std::fmt;
use std::str::FromStr;

use crate::target::{Backend, Frontend, Target};

/// One server of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// nginx: a web server in front (static files, proxy headers, body limit).
    Nginx,
    /// Apache httpd: a web server in front, or the host of mod_wsgi.
    Apache,
    /// `deployctl serve`: the embedded WSGI server, a process of its own.
    Embedded,
    /// uWSGI: a process of its own, speaking HTTP or the uwsgi protocol.
    Uwsgi,
    /// Gunicorn: a process of its own, speaking HTTP.
    Gunicorn,
    /// mod_wsgi: the app inside Apache's own processes; no process or socket of its own.
    ModWsgi,
}

/// What a tier is to its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts clients (or a front's requests) and passes them inward.
    WebServer,
    /// Runs the app in a process of its own.
    AppServer,
    /// Runs the app inside the web server in front of it.
    InProcessApp,
}

impl Tier {
    pub const ALL: [Tier; 6] = [
        Tier::Nginx,
        Tier::Apache,
        Tier::Embedded,
        Tier::Uwsgi,
        Tier::Gunicorn,
        Tier::ModWsgi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Nginx => "nginx",
            Tier::Apache => "apache",
            Tier::Embedded => "embedded",
            Tier::Uwsgi => "uwsgi",
            Tier::Gunicorn => "gunicorn",
            Tier::ModWsgi => "mod_wsgi",
        }
    }

    pub fn role(self) -> Role {
        match self {
            Tier::Nginx | Tier::Apache => Role::WebServer,
            Tier::Embedded | Tier::Uwsgi | Tier::Gunicorn => Role::AppServer,
            Tier::ModWsgi => Role::InProcessApp,
        }
    }

    /// Whether this build renders the tier (every tier now; chains are still limited by
    /// [`Chain::is_implemented`]).
    pub fn is_implemented(self) -> bool {
        match self {
            Tier::Nginx | Tier::Apache | Tier::Embedded | Tier::Uwsgi | Tier::Gunicorn | Tier::ModWsgi => true,
        }
    }

    fn from_backend(b: Backend) -> Tier {
        match b {
            Backend::Embedded => Tier::Embedded,
            Backend::Uwsgi => Tier::Uwsgi,
            Backend::Gunicorn => Tier::Gunicorn,
            Backend::ModWsgi => Tier::ModWsgi,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a tier reaches the one behind it, decided by the two tiers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 over a socket (`proxy_pass`, Gunicorn, the embedded server).
    Http,
    /// uWSGI's binary protocol (`uwsgi_pass`): nginx in front of uWSGI.
    Uwsgi,
    /// A function call inside one process: Apache running mod_wsgi.
    InProcess,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
            Protocol::InProcess => "in-process",
        }
    }
}

/// Whether `outer` may stand directly in front of `inner`, and what they speak.
pub fn link(outer: Tier, inner: Tier) -> Result<Protocol, String> {
    use Tier::*;
    match (outer, inner) {
        (Nginx, Uwsgi) => Ok(Protocol::Uwsgi),
        (Nginx, Apache | Embedded | Gunicorn) => Ok(Protocol::Http),
        // uWSGI's own protocol through mod_proxy_uwsgi, as nginx's uwsgi_pass speaks it.
        (Apache, Uwsgi) => Ok(Protocol::Uwsgi),
        (Apache, Embedded | Gunicorn) => Ok(Protocol::Http),
        (Apache, ModWsgi) => Ok(Protocol::InProcess),
        (Nginx, ModWsgi) => Err("mod_wsgi runs inside Apache httpd: put `apache` in front of it".into()),
        (Nginx, Nginx) | (Apache, Apache) => Err(format!("{outer} twice in a row does nothing")),
        (Apache, Nginx) => Err("nginx goes in front of Apache, not behind it".into()),
        (Embedded | Uwsgi | Gunicorn | ModWsgi, inner) => Err(format!(
            "{outer} runs the app: nothing can stand behind it ({inner} does)"
        )),
    }
}

/// A chain of tiers, edge first; every adjacent pair [`link`]s and the last runs the app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain(Vec<Tier>);

/// Why a target name is not a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// A word that names no tier.
    Unknown,
    /// Known tiers that cannot be put together that way.
    Impossible(String),
}

impl Chain {
    pub fn tiers(&self) -> &[Tier] {
        &self.0
    }

    /// Whether this build renders every tier of the chain and every link between them (nginx
    /// in front of Apache is built for mod_wsgi behind it only).
    pub fn is_implemented(&self) -> bool {
        self.0.iter().all(|t| t.is_implemented()) && !(self.0.len() > 2 && self.0.last() != Some(&Tier::ModWsgi))
    }

    pub fn from_tiers(tiers: Vec<Tier>) -> Result<Chain, ChainError> {
        let Some(&last) = tiers.last() else {
            return Err(ChainError::Impossible("a target names at least one tier".into()));
        };
        if tiers.first() == Some(&Tier::ModWsgi) {
            return Err(ChainError::Impossible(
                "mod_wsgi runs inside Apache httpd: put `apache` in front of it".into(),
            ));
        }
        for pair in tiers.windows(2) {
            link(pair[0], pair[1]).map_err(ChainError::Impossible)?;
        }
        match last.role() {
            Role::AppServer | Role::InProcessApp => {}
            Role::WebServer => {
                return Err(ChainError::Impossible(format!(
                    "{last} alone runs no app: end the chain with embedded, uwsgi, gunicorn or mod_wsgi"
                )));
            }
        }
        Ok(Chain(tiers))
    }

    /// The frontend/backend pair naming this chain.
    pub fn target(&self) -> Result<Target, ChainError> {
        let (last, front) = self
            .0
            .split_last()
            .ok_or_else(|| ChainError::Impossible("an empty chain".into()))?;
        let backend = match last {
            Tier::Embedded => Backend::Embedded,
            Tier::Uwsgi => Backend::Uwsgi,
            Tier::Gunicorn => Backend::Gunicorn,
            Tier::ModWsgi => Backend::ModWsgi,
            Tier::Nginx | Tier::Apache => {
                return Err(ChainError::Impossible(format!("{last} runs no app")));
            }
        };
        let frontend = match front {
            [] => Frontend::None,
            [Tier::Nginx] => Frontend::Nginx,
            [Tier::Apache] => Frontend::Apache,
            [Tier::Nginx, Tier::Apache] => Frontend::NginxApache,
            other => {
                let names: Vec<&str> = other.iter().map(|t| t.name()).collect();
                return Err(ChainError::Impossible(format!(
                    "no target has `{}` in front",
                    names.join("+")
                )));
            }
        };
        Ok(Target::new(frontend, backend))
    }
}

impl From<Target> for Chain {
    fn from(t: Target) -> Chain {
        let mut tiers = match t.frontend {
            Frontend::None => vec![],
            Frontend::Nginx => vec![Tier::Nginx],
            Frontend::Apache => vec![Tier::Apache],
            Frontend::NginxApache => vec![Tier::Nginx, Tier::Apache],
        };
        tiers.push(Tier::from_backend(t.backend));
        Chain(tiers)
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.name()).collect();
        f.write_str(&names.join("+"))
    }
}

impl FromStr for Chain {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Chain, ChainError> {
        let tiers = s
            .split('+')
            .map(|w| Tier::ALL.into_iter().find(|t| t.name() == w).ok_or(ChainError::Unknown))
            .collect::<Result<Vec<Tier>, _>>()?;
        Chain::from_tiers(tiers)
    }
}

/// `--target NAME` read as a chain: the target, or the message and whether the name is
/// unknown (rather than impossible or not built). Messages end with the valid targets.
pub fn parse_target(name: &str) -> Result<Target, String> {
    let valid = Target::implemented_list();
    let chain: Chain = match name.parse() {
        Ok(c) => c,
        Err(ChainError::Unknown) => return Err(format!("unknown target `{name}`; valid targets: {valid}")),
        Err(ChainError::Impossible(why)) => {
            return Err(format!(
                "target `{name}` is not a possible chain: {why}; valid targets: {valid}"
            ));
        }
    };
    let target = chain.target().map_err(|e| match e {
        ChainError::Unknown => format!("unknown target `{name}`; valid targets: {valid}"),
        ChainError::Impossible(why) => {
            format!("target `{name}` is not a possible chain: {why}; valid targets: {valid}")
        }
    })?;
    if chain.is_implemented() {
        Ok(target)
    } else if target.is_designed() {
        Err(format!(
            "target `{target}` is planned but not implemented yet; valid targets: {valid}"
        ))
    } else {
        Err(format!(
            "target `{target}` is a possible chain, not implemented yet; valid targets: {valid}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::DESIGNED;

    #[test]
    fn every_designed_target_is_a_chain_and_back() {
        for t in DESIGNED {
            let chain = Chain::from(t);
            assert_eq!(chain.to_string(), t.to_string());
            assert_eq!(chain.to_string().parse::<Chain>(), Ok(chain.clone()));
            assert_eq!(chain.target(), Ok(t));
            assert_eq!(chain.is_implemented(), t.is_implemented(), "{t}");
        }
    }

    #[test]
    fn adjacent_tiers_reject_impossible_chains() {
        for bad in [
            "mod_wsgi",
            "nginx+mod_wsgi",
            "nginx",
            "gunicorn+nginx",
            "apache+nginx+uwsgi",
            "nginx+nginx+uwsgi",
            "uwsgi+gunicorn",
        ] {
            assert!(
                matches!(bad.parse::<Chain>(), Err(ChainError::Impossible(_))),
                "{bad} parsed"
            );
        }
        assert_eq!("nginx+waitress".parse::<Chain>(), Err(ChainError::Unknown));
        // Possible, not designed: parses, is not built.
        let c: Chain = "nginx+apache+uwsgi".parse().expect("a possible chain");
        assert!(!c.is_implemented());
    }

    #[test]
    fn target_messages_list_the_valid_targets() {
        let e = parse_target("nginx+mod_wsgi").unwrap_err();
        assert!(
            e.contains("mod_wsgi runs inside Apache") && e.contains("valid targets: embedded"),
            "{e}"
        );
        let e = parse_target("nginx+apache+gunicorn").unwrap_err();
        assert!(
            e.starts_with("target `nginx+apache+gunicorn` is a possible chain, not implemented yet; valid targets: "),
            "{e}"
        );
        assert_eq!(
            parse_target("nginx+uwsgi"),
            Ok(Target::new(Frontend::Nginx, Backend::Uwsgi))
        );
    }
}
