//! `[cluster]`: what the `kubernetes` and `compose` targets need beyond the rest of the
//! file — the image, how many replicas, the resources of one, the namespace.
//!
//! Owns: the table's resolved form ([`Cluster`]), its defaults (from [`crate::defaults`]) and
//! its rules (an image reference, replica bounds that agree, CPU and memory amounts, a
//! namespace Kubernetes accepts), each problem with its key and span. Does not own: what the
//! manifests look like or any name derived for them (`deployctl::plan`).

use std::ops::Range;

use serde::Serialize;
use toml::Spanned;

use super::diag::Diagnostic;
use super::raw::{Quantity, RawCluster, SizeOrInt};
use super::units::{Size, parse_size};
use crate::defaults;

/// `[cluster]`, every default filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// The app's image, as a registry reference. Default: `NAME:latest`
    /// ([`crate::defaults::cluster_image`]), what `docker build -t NAME` tags.
    pub image: String,
    /// Pods when not autoscaled (`min_replicas == max_replicas`), and `min_replicas`' default.
    /// Set with an explicit `min_replicas` below `max_replicas` it would be read by nothing
    /// (the autoscaler owns the count): an error. Default:
    /// [`crate::defaults::CLUSTER_REPLICAS`].
    pub replicas: u32,
    /// The autoscaler's lower bound. Default: `replicas`.
    pub min_replicas: u32,
    /// The autoscaler's upper bound; equal to `min_replicas`, no autoscaler is rendered.
    /// Default: twice `min_replicas`.
    pub max_replicas: u32,
    /// CPU requested per pod, in millicores (`"250m"`, `"0.5"`, `1`). Default:
    /// [`crate::defaults::CLUSTER_CPU_MILLI`].
    #[serde(rename = "cpu", serialize_with = "ser_cpu")]
    pub cpu_milli: u64,
    /// Memory requested per pod, also its limit (`"256M"`: deploy.toml's binary sizes).
    /// Default: [`crate::defaults::CLUSTER_MEMORY`].
    pub memory: Size,
    /// The Kubernetes namespace. Default: none, kubectl's current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Cluster {
    /// Whether an autoscaler manages the replica count.
    pub fn autoscaled(&self) -> bool {
        self.max_replicas > self.min_replicas
    }

    /// The CPU request as Kubernetes writes a quantity: `250m`, `1`.
    pub fn cpu(&self) -> String {
        cpu_text(self.cpu_milli)
    }

    /// The memory as a Kubernetes quantity: `256Mi`, `1Gi`, or bytes.
    pub fn memory_quantity(&self) -> String {
        let n = self.memory.0;
        if n % (1 << 30) == 0 {
            format!("{}Gi", n >> 30)
        } else if n % (1 << 20) == 0 {
            format!("{}Mi", n >> 20)
        } else if n % (1 << 10) == 0 {
            format!("{}Ki", n >> 10)
        } else {
            n.to_string()
        }
    }
}

fn cpu_text(milli: u64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn ser_cpu<S: serde::Serializer>(milli: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cpu_text(*milli))
}

/// The most replicas a bound may name.
const MAX_REPLICAS: i64 = 1000;

/// `[cluster]` resolved for the app `name`; problems are pushed to `problems`.
pub(super) fn resolve(raw: Option<RawCluster>, name: &str, problems: &mut Vec<Diagnostic>) -> Cluster {
    let c = raw.unwrap_or_default();
    let mut problem = |span: Range<usize>, key: &str, message: String, hint: Option<&str>| {
        let d = Diagnostic::new(span, key, message);
        problems.push(match hint {
            Some(h) => d.hint(h),
            None => d,
        });
    };
    let image = match &c.image {
        Some(i) => {
            if let Some(why) = image_problem(i.get_ref()) {
                problem(
                    i.span(),
                    "cluster.image",
                    format!("{:?} {why}", i.get_ref()),
                    Some("write a reference such as \"registry.example.com/hello:1.2\""),
                );
            }
            i.get_ref().clone()
        }
        None => defaults::cluster_image(name),
    };
    let mut count = |v: &Option<Spanned<i64>>, key: &str, default: u32| match v {
        Some(n) if (1..=MAX_REPLICAS).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            problem(
                n.span(),
                key,
                format!("{} is out of range (1 to {MAX_REPLICAS})", n.get_ref()),
                None,
            );
            default
        }
        None => default,
    };
    let replicas = count(&c.replicas, "cluster.replicas", defaults::CLUSTER_REPLICAS);
    let min_replicas = count(&c.min_replicas, "cluster.min_replicas", replicas);
    let max_replicas = count(&c.max_replicas, "cluster.max_replicas", min_replicas.saturating_mul(2));
    // Unset, it is the count the bounds give (`--show` prints it), not a default to check.
    let replicas = if c.replicas.is_some() { replicas } else { min_replicas };
    if max_replicas < min_replicas {
        let span = c
            .max_replicas
            .as_ref()
            .or(c.min_replicas.as_ref())
            .map_or(0..0, |s| s.span());
        problem(
            span,
            "cluster.max_replicas",
            format!("{max_replicas} is below min_replicas ({min_replicas})"),
            None,
        );
    } else if let (Some(r), Some(_), true) = (&c.replicas, &c.min_replicas, max_replicas > min_replicas) {
        // Autoscaled, and `replicas` not even min_replicas' default: nothing would read it.
        problem(
            r.span(),
            "cluster.replicas",
            format!(
                "{replicas} would be ignored: min_replicas ({min_replicas}) and max_replicas ({max_replicas}) \
                 differ, so the HorizontalPodAutoscaler sets the pod count and the Deployment has none"
            ),
            Some("remove `replicas`, or set `min_replicas = max_replicas` for a fixed count"),
        );
    } else if !(min_replicas..=max_replicas).contains(&replicas) {
        // Not autoscaled: min_replicas = max_replicas is the count.
        let span = c.replicas.as_ref().map_or(0..0, |s| s.span());
        problem(
            span,
            "cluster.replicas",
            format!("{replicas} differs from min_replicas = max_replicas ({min_replicas}), the fixed pod count"),
            Some("remove `replicas`, or make it equal to both bounds"),
        );
    }
    let cpu_milli = match &c.cpu {
        Some(q) => match parse_cpu(q.get_ref()) {
            Ok(m) => m,
            Err(why) => {
                problem(
                    q.span(),
                    "cluster.cpu",
                    why,
                    Some("write millicores (\"250m\") or cores (\"0.5\", 2)"),
                );
                defaults::CLUSTER_CPU_MILLI
            }
        },
        None => defaults::CLUSTER_CPU_MILLI,
    };
    let memory = match &c.memory {
        Some(m) => {
            let parsed = match m.get_ref() {
                SizeOrInt::Text(t) => parse_size(t),
                SizeOrInt::Int(n) => u64::try_from(*n).map(Size).map_err(|_| format!("{n} is negative")),
            };
            match parsed {
                Ok(s) if s.0 >= MIN_MEMORY => s,
                Ok(s) => {
                    problem(
                        m.span(),
                        "cluster.memory",
                        format!("{s} is too little for a Python worker (at least 32M)"),
                        None,
                    );
                    defaults::CLUSTER_MEMORY
                }
                Err(why) => {
                    problem(m.span(), "cluster.memory", why, None);
                    defaults::CLUSTER_MEMORY
                }
            }
        }
        None => defaults::CLUSTER_MEMORY,
    };
    let namespace = c.namespace.as_ref().map(|n| {
        if !is_dns_label(n.get_ref()) {
            problem(
                n.span(),
                "cluster.namespace",
                format!(
                    "{:?} is not a Kubernetes namespace: lower-case letters, digits and `-`, at most 63, \
                     starting and ending with a letter or digit",
                    n.get_ref()
                ),
                None,
            );
        }
        n.get_ref().clone()
    });
    Cluster {
        image,
        replicas,
        min_replicas,
        max_replicas,
        cpu_milli,
        memory,
        namespace,
    }
}

/// The least memory a pod may be given.
const MIN_MEMORY: u64 = 32 << 20;

/// What is wrong with an image reference, if anything: `[registry/]path[:tag][@digest]` in
/// the characters the distribution spec allows.
fn image_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("is empty");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
    {
        return Some("is not an image reference (letters, digits, `.`, `_`, `-`, `/`, `:` and `@` only)");
    }
    let path = s.split('@').next().unwrap_or(s);
    // The tag is after a `:` in the last component (a `:` before a `/` is a registry's port).
    let slash = path.rfind('/').map_or(0, |i| i + 1);
    let repo = match path[slash..].find(':') {
        Some(i) => &path[..slash + i],
        None => path,
    };
    if repo.is_empty() || repo.ends_with('/') || repo.split('/').any(str::is_empty) {
        return Some("is not an image reference");
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("has upper-case letters in its repository (registries refuse them)");
    }
    None
}

/// `"250m"`, `"0.5"`, `"2"`, `2`: millicores.
fn parse_cpu(q: &Quantity) -> Result<u64, String> {
    let text = match q {
        Quantity::Int(n) if *n > 0 => return u64::try_from(*n).map(|n| n * 1000).map_err(|e| e.to_string()),
        Quantity::Int(n) => return Err(format!("{n} must be greater than zero")),
        Quantity::Float(f) => format!("{f}"),
        Quantity::Text(t) => t.clone(),
    };
    let bad = || format!("{text:?} is not a CPU amount");
    let milli = if let Some(m) = text.strip_suffix('m') {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
            || frac.len() > 3
        {
            return Err(bad());
        }
        let w: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let f: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}").parse().map_err(|_| bad())?
        };
        w.checked_mul(1000).and_then(|w| w.checked_add(f)).ok_or_else(bad)?
    };
    if milli == 0 {
        return Err(format!("{text:?} must be greater than zero"));
    }
    Ok(milli)
}

/// An RFC 1123 label, as Kubernetes checks a namespace.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_amounts() {
        assert_eq!(parse_cpu(&Quantity::Text("250m".into())), Ok(250));
        assert_eq!(parse_cpu(&Quantity::Text("0.5".into())), Ok(500));
        assert_eq!(parse_cpu(&Quantity::Text("2".into())), Ok(2000));
        assert_eq!(parse_cpu(&Quantity::Int(1)), Ok(1000));
        assert_eq!(parse_cpu(&Quantity::Float(1.5)), Ok(1500));
        for bad in ["", "m", "1.2345", "-1", "1 m", "0", "0m", "two"] {
            assert!(parse_cpu(&Quantity::Text(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(cpu_text(250), "250m");
        assert_eq!(cpu_text(2000), "2");
    }

    /// `[cluster]` with `body` resolved: the counts, or each problem's key and message.
    fn counts(body: &str) -> Result<(u32, u32, u32), Vec<(String, String)>> {
        let source = format!("[app]\nentry = \"app:app\"\n[cluster]\n{body}");
        let path = std::env::temp_dir().join("deploy.toml");
        match crate::spec::Spec::from_source(&path, &source) {
            Ok(s) => Ok((s.cluster.replicas, s.cluster.min_replicas, s.cluster.max_replicas)),
            Err(e) => Err(e
                .diagnostics
                .iter()
                .map(|d| (d.key.clone().unwrap_or_default(), d.message.clone()))
                .collect()),
        }
    }

    #[test]
    fn replicas_is_a_fixed_count_or_min_replicas_default_never_ignored() {
        // Alone: the autoscaler's lower bound, twice it the upper.
        assert_eq!(counts("replicas = 3"), Ok((3, 3, 6)));
        assert_eq!(counts("replicas = 3\nmax_replicas = 5"), Ok((3, 3, 5)));
        // A fixed count, said three times or once.
        assert_eq!(
            counts("replicas = 3\nmin_replicas = 3\nmax_replicas = 3"),
            Ok((3, 3, 3))
        );
        assert_eq!(counts("replicas = 3\nmax_replicas = 3"), Ok((3, 3, 3)));
        // Unset, it is what the bounds give, whatever the default.
        assert_eq!(counts("min_replicas = 5"), Ok((5, 5, 10)));
        assert_eq!(counts("min_replicas = 5\nmax_replicas = 5"), Ok((5, 5, 5)));
        assert_eq!(counts(""), Ok((2, 2, 4)));
        // Set beside bounds that differ: nothing would read it.
        for body in [
            "replicas = 4\nmin_replicas = 2\nmax_replicas = 7",
            "replicas = 2\nmin_replicas = 2",
        ] {
            let problems = counts(body).expect_err(body);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].0, "cluster.replicas");
            assert!(problems[0].1.contains("would be ignored"), "{problems:?}");
        }
        let problems = counts("replicas = 2\nmin_replicas = 3\nmax_replicas = 3").expect_err("differs");
        assert_eq!(problems[0].0, "cluster.replicas", "{problems:?}");
        assert!(
            problems[0].1.contains("differs from min_replicas = max_replicas (3)"),
            "{problems:?}"
        );
    }

    #[test]
    fn image_references() {
        for ok in [
            "hello:latest",
            "registry.example.com:5000/team/hello:1.2",
            "hello@sha256:abc",
            "hello:V1",
        ] {
            assert_eq!(image_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "hello world",
            "a//b",
            "registry.example.com/Team/hello",
            "Hello:1",
            "x\ny",
            ":1",
        ] {
            assert!(image_problem(bad).is_some(), "{bad:?}");
        }
    }
}
