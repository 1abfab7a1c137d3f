//! ACME (RFC 8555): certificates obtained and renewed from an ACME server with HTTP-01.
//!
//! Owns: the account (created once per directory URL, its credentials kept beside the
//! certificates, mode 0600), the order for a set of names, the HTTP-01 answers written into a
//! webroot the front serves at `/.well-known/acme-challenge/`, the P-256 key and its CSR, and
//! the certificate directory's layout: each issuance goes into its own `cert-N/` directory
//! (`fullchain.pem`, `privkey.pem` 0600) and the `live` symbolic link is switched to it in one
//! `rename` once the caller's check accepts the pair there, so a front reading
//! `live/fullchain.pem` and `live/privkey.pem` never sees a certificate beside another
//! certificate's key, and a failed issuance (or a refused pair) leaves `live` as it was.
//! Also when a certificate needs renewing ([`renewal`]).
//!
//! Does not own: the `[tls]` table, what makes a pair usable (`orchestrate::tls::check_pair`,
//! passed in), serving the webroot, or reloading the front — the caller renders and reloads
//! (`deployctl cert`, `up`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};

/// The account file in the certificate directory.
pub const ACCOUNT: &str = "account.json";
/// The link to the certificate in use.
pub const LIVE: &str = "live";
pub const FULLCHAIN: &str = "fullchain.pem";
pub const PRIVKEY: &str = "privkey.pem";
/// In a generation directory: this certificate is a self-signed placeholder, not issued.
pub const SELF_SIGNED: &str = "self-signed";
/// Where HTTP-01 answers go under the webroot (RFC 8555 §8.3).
pub const CHALLENGE_DIR: &str = ".well-known/acme-challenge";

/// What to obtain, and from where.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The ACME directory URL.
    pub directory: &'a str,
    /// Contact for the account (`mailto:` is added).
    pub email: Option<&'a str>,
    /// An extra root to trust for the ACME server's own HTTPS (Pebble, step-ca); `None`: the
    /// system's roots.
    pub ca: Option<&'a Path>,
    /// The names the certificate is for (the first one is the subject).
    pub names: &'a [String],
    /// The directory the front serves at `/.well-known/acme-challenge/`'s parent.
    pub webroot: &'a Path,
    /// The certificate directory (account, `cert-N/`, `live`).
    pub dir: &'a Path,
    /// How long to wait for the server to validate and to issue.
    pub timeout: Duration,
}

/// A certificate in use: where it is and until when it is valid.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub fullchain: PathBuf,
    pub key: PathBuf,
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// The account as stored: the credentials are per directory URL.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A check of a pair before it becomes the live one (certificate, key): the caller's
/// (`orchestrate::tls::check_pair`, which names the file at fault).
pub type PairCheck<'a> = &'a dyn Fn(&Path, &Path) -> anyhow::Result<()>;

/// Obtains a certificate for `req.names` and makes it the live one once `check` accepts the
/// pair in its own `cert-N/` (a pair it refuses is removed, `live` left as it was).
/// Blocking: runs the ACME exchange on a current-thread runtime of its own.
pub fn obtain(req: &Request<'_>, check: PairCheck<'_>) -> anyhow::Result<Certificate> {
    if req.names.is_empty() {
        bail!("no names to obtain a certificate for");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the ACME client's runtime")?;
    create_private_dir(req.dir)?;
    // Every step has its own bound; this one bounds a server that accepts and never answers.
    let limit = req.timeout * 2;
    let (chain, key_pem) = runtime
        // The timer is made inside the runtime (it needs its time driver).
        .block_on(async { tokio::time::timeout(limit, exchange(req)).await })
        .map_err(|_| {
            anyhow::anyhow!(
                "{}: no answer from the ACME server within {} s",
                req.directory,
                limit.as_secs()
            )
        })??;
    install(req.dir, &chain, &key_pem, false, check)?;
    live(req.dir)?.with_context(|| format!("{} was not installed", req.dir.join(LIVE).display()))
}

async fn exchange(req: &Request<'_>) -> anyhow::Result<(String, String)> {
    let account = account(req).await?;
    let identifiers: Vec<Identifier> = req.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .with_context(|| format!("{}: ordering a certificate for {}", req.directory, names(req.names)))?;

    // One HTTP-01 answer per name, written where the front serves it. They are removed when
    // this returns, whatever happened.
    let mut answers = Answers::new(req.webroot)?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.with_context(|| format!("{}: reading an authorization", req.directory))?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!(
                "{}: the authorization for {} is {other:?}",
                req.directory,
                authz.identifier()
            ),
        }
        let what = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .with_context(|| format!("{}: the server offers no HTTP-01 challenge for {what}", req.directory))?;
        answers.write(&challenge.token, challenge.key_authorization().as_str())?;
        challenge
            .set_ready()
            .await
            .with_context(|| format!("{}: asking the server to validate {what}", req.directory))?;
    }

    let retries = RetryPolicy::default().timeout(req.timeout);
    let failure = match order.poll_ready(&retries).await {
        Ok(OrderStatus::Ready) => None,
        Ok(_) => Some(why_invalid(&mut order).await),
        Err(e) => Some(format!("{:#}", anyhow::Error::from(e))),
    };
    if let Some(why) = failure {
        return Err(crate::printer::hinted(
            format!(
                "{}: the server did not validate {}: {why}",
                req.directory,
                names(req.names)
            ),
            format!(
                "the ACME server fetches http://NAME/{CHALLENGE_DIR}/TOKEN on port 80 of each name: \
                 the front must answer there from {}",
                req.webroot.display()
            ),
        ));
    }

    // The certificate's key: ECDSA P-256, made here, never sent anywhere.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the certificate key")?;
    let mut params = rcgen::CertificateParams::new(req.names.to_vec()).context("the certificate's names")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, req.names[0].clone());
    let csr = params
        .serialize_request(&key)
        .context("making the certificate request")?;
    order
        .finalize_csr(csr.der())
        .await
        .with_context(|| format!("{}: finalizing the order", req.directory))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .with_context(|| format!("{}: downloading the certificate", req.directory))?;
    drop(answers);
    Ok((chain, key.serialize_pem()))
}

/// The account for the directory: the stored one, or a new one (stored before it is used).
async fn account(req: &Request<'_>) -> anyhow::Result<Account> {
    let builder = || match req.ca {
        Some(ca) => {
            Account::builder_with_root(ca).with_context(|| format!("reading the ACME server's root {}", ca.display()))
        }
        None => Account::builder().context("loading the system's root certificates"),
    };
    let path = req.dir.join(ACCOUNT);
    if let Ok(bytes) = std::fs::read(&path) {
        let stored: StoredAccount =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
        if stored.directory == req.directory {
            return builder()?
                .from_credentials(stored.credentials)
                .await
                .with_context(|| format!("{}: restoring the account of {}", req.directory, path.display()));
        }
    }
    let contact = req.email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            req.directory.to_owned(),
            None,
        )
        .await
        .map_err(|e| reach_error(req.directory, e))?;
    let stored = StoredAccount {
        directory: req.directory.to_owned(),
        credentials,
    };
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
    Ok(account)
}

/// Creating the account is the first request: say plainly when the server cannot be reached.
fn reach_error(directory: &str, e: instant_acme::Error) -> anyhow::Error {
    let chain = format!("{:#}", anyhow::Error::from(e));
    anyhow::anyhow!("{directory}: cannot register an account with the ACME server: {chain}")
}

/// Why an order is invalid: the first challenge error the server recorded.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(problem) = &c.error {
                return format!("{}: {problem}", authz.identifier());
            }
        }
    }
    "the order became invalid".into()
}

fn names(names: &[String]) -> String {
    names.join(", ")
}

/// HTTP-01 answers in the webroot; removed on drop.
struct Answers {
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl Answers {
    fn new(webroot: &Path) -> anyhow::Result<Self> {
        let dir = webroot.join(CHALLENGE_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Answers {
            dir,
            written: Vec::new(),
        })
    }

    fn write(&mut self, token: &str, key_authorization: &str) -> anyhow::Result<()> {
        // Tokens are base64url (RFC 8555 §8.3); anything else could escape the directory.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("the ACME server sent a token that is not base64url: {token:?}");
        }
        let path = self.dir.join(token);
        std::fs::write(&path, key_authorization).with_context(|| format!("writing {}", path.display()))?;
        self.written.push(path);
        Ok(())
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        for p in &self.written {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes the new certificate into its own `cert-N/`, checks it there, and switches `live` to
/// it; then removes generations older than the previous one (kept for a rollback by hand). A
/// pair `check` refuses is removed and `live` is left as it was.
fn install(dir: &Path, chain: &str, key_pem: &str, self_signed: bool, check: PairCheck<'_>) -> anyhow::Result<()> {
    // `live` always points at one of the `cert-N` directories, so the highest N is the newest.
    let next = generations(dir).into_iter().max().unwrap_or(0) + 1;
    let gen_dir = dir.join(format!("cert-{next}"));
    create_private_dir(&gen_dir)?;
    write_private(&gen_dir.join(PRIVKEY), key_pem.as_bytes())?;
    std::fs::write(gen_dir.join(FULLCHAIN), chain)
        .with_context(|| format!("writing {}", gen_dir.join(FULLCHAIN).display()))?;
    if self_signed {
        std::fs::write(gen_dir.join(SELF_SIGNED), "")
            .with_context(|| format!("writing {}", gen_dir.join(SELF_SIGNED).display()))?;
    }
    if let Err(e) = check(&gen_dir.join(FULLCHAIN), &gen_dir.join(PRIVKEY)) {
        let _ = std::fs::remove_dir_all(&gen_dir);
        return Err(e.context(format!(
            "the new certificate was not installed; {} is unchanged",
            dir.join(LIVE).display()
        )));
    }
    // rename(2) of a symbolic link over another is atomic: a reader sees the old pair or the new.
    let tmp = dir.join(".live.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("cert-{next}"), &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(LIVE)).with_context(|| format!("switching {}", dir.join(LIVE).display()))?;
    for g in generations(dir) {
        if g + 1 < next {
            let _ = std::fs::remove_dir_all(dir.join(format!("cert-{g}")));
        }
    }
    Ok(())
}

fn generations(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cert-")?.parse().ok())
        .collect()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes a secret: created 0600 (never readable by others, even for an instant), then renamed
/// into place.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Installs a self-signed certificate for `names` (and `localhost`) as the live one: what a
/// front starts with before ACME has issued one (it must serve HTTPS to start, and HTTP to
/// answer the challenge), or for good in a local run without certificates. ECDSA P-256,
/// valid for `days`; marked so that [`renewal`] reports it.
pub fn install_self_signed(dir: &Path, names: &[String], days: u32) -> anyhow::Result<Certificate> {
    let mut all: Vec<String> = names.to_vec();
    if !all.iter().any(|n| n == "localhost") {
        all.push("localhost".into());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(all.clone()).context("the certificate's names")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{} (self-signed by deployctl)", all[0]),
    );
    let now = time_now();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    let cert = params.self_signed(&key).context("signing the certificate")?;
    create_private_dir(dir)?;
    // Made here from its own key: nothing to check.
    install(dir, &cert.pem(), &key.serialize_pem(), true, &|_, _| Ok(()))?;
    live(dir)?.with_context(|| format!("{} was not installed", dir.join(LIVE).display()))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The live certificate of `dir`, if there is one.
pub fn live(dir: &Path) -> anyhow::Result<Option<Certificate>> {
    let fullchain = dir.join(LIVE).join(FULLCHAIN);
    let pem = match std::fs::read(&fullchain) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", fullchain.display())),
    };
    let (names, not_after) = leaf(&pem).with_context(|| format!("reading {}", fullchain.display()))?;
    Ok(Some(Certificate {
        fullchain,
        key: dir.join(LIVE).join(PRIVKEY),
        names,
        not_after,
    }))
}

/// The first certificate of a PEM chain: its DNS names and the end of its validity.
fn leaf(pem: &[u8]) -> anyhow::Result<(Vec<String>, SystemTime)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((names, not_after))
}

/// Whether the live certificate must be renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// No certificate yet.
    Missing,
    /// A self-signed placeholder is live.
    SelfSigned,
    /// It does not cover every name asked for.
    Names { missing: Vec<String> },
    /// Less than the margin is left (or it has expired).
    Expiring { days_left: i64 },
    /// Valid for longer than the margin.
    NotYet { days_left: i64 },
}

impl Renewal {
    pub fn needed(&self) -> bool {
        !matches!(self, Renewal::NotYet { .. })
    }
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Renewal::Missing => f.write_str("no certificate yet"),
            Renewal::SelfSigned => f.write_str("a self-signed placeholder is in use"),
            Renewal::Names { missing } => write!(f, "the certificate does not cover {}", missing.join(", ")),
            Renewal::Expiring { days_left } if *days_left < 0 => {
                write!(f, "the certificate expired {} days ago", -days_left)
            }
            Renewal::Expiring { days_left } => write!(f, "the certificate expires in {days_left} days"),
            Renewal::NotYet { days_left } => write!(f, "the certificate is valid for {days_left} more days"),
        }
    }
}

/// Renew when fewer than `margin` are left, or when a name is not covered.
pub fn renewal(dir: &Path, names: &[String], margin: Duration, now: SystemTime) -> anyhow::Result<Renewal> {
    let Some(cert) = live(dir)? else {
        return Ok(Renewal::Missing);
    };
    if dir.join(LIVE).join(SELF_SIGNED).exists() {
        return Ok(Renewal::SelfSigned);
    }
    let missing: Vec<String> = names.iter().filter(|n| !cert.names.contains(n)).cloned().collect();
    if !missing.is_empty() {
        return Ok(Renewal::Names { missing });
    }
    let left = match cert.not_after.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days_left = left.div_euclid(86_400);
    Ok(if left < margin.as_secs() as i64 {
        Renewal::Expiring { days_left }
    } else {
        Renewal::NotYet { days_left }
    })
}

#[cfg(test)]
mod tests {
    /// A pair the check refuses (a key that is not the certificate's) never becomes `live`:
    /// its `cert-N/` is removed and `live` still holds the previous pair.
    #[test]
    fn a_refused_pair_leaves_live_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let before = super::install_self_signed(dir, &["localhost".to_string()], 2).unwrap();
        let before_pem = std::fs::read(&before.fullchain).unwrap();
        let make = || {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        let ((chain, _), (_, other_key)) = (make(), make());
        let check = |c: &std::path::Path, k: &std::path::Path| crate::orchestrate::tls::check_pair(c, k);
        let err = format!(
            "{:#}",
            super::install(dir, &chain, &other_key, false, &check).unwrap_err()
        );
        assert!(err.contains("the key does not match the certificate"), "{err}");
        assert!(err.contains("the new certificate was not installed"), "{err}");
        assert_eq!(super::generations(dir), vec![1]);
        let live = super::live(dir).unwrap().unwrap();
        assert_eq!(std::fs::read(&live.fullchain).unwrap(), before_pem);
        // The same pair with its own key goes in.
        let (chain, key) = make();
        super::install(dir, &chain, &key, false, &check).unwrap();
        assert_eq!(
            std::fs::read_to_string(super::live(dir).unwrap().unwrap().fullchain).unwrap(),
            chain
        );
    }
}
