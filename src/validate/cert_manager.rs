//! cert-manager's `Issuer` (`issuer.yaml`) checked against cert-manager's own CRD schema
//! (`schemas/cert-manager-issuer.v1.json`, v1.21.1's; its README says where from), with
//! Python's `jsonschema` as the interpreter of kubernetes-validate has it (a dependency of
//! that package): kubernetes-validate bundles the schemas of Kubernetes' own API only and
//! passes an `Issuer` with a warning that it has none. Strict like `--strict`: an object
//! schema that lists its properties refuses others, as `kubectl apply` does with server-side
//! field validation.

use std::path::{Path, PathBuf};

use super::{Job, Outcome, Scratch, find_tool, run, tool_identity, verdict};

/// The `openAPIV3Schema` of `issuers.cert-manager.io` v1, descriptions removed.
const SCHEMA: &str = include_str!("schemas/cert-manager-issuer.v1.json");
/// Where the schema comes from, in the cache key.
const SCHEMA_VERSION: &str = "cert-manager v1.21.1";

/// argv: the schema, the manifest. Prints each error (`path: message`), exits 1 on any.
const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema, yaml
except ImportError as e:
    print("MISSING " + str(e))
    sys.exit(3)
schema = json.load(open(sys.argv[1]))
def strict(o):
    if isinstance(o, dict):
        if "properties" in o and "additionalProperties" not in o and not o.get("x-kubernetes-preserve-unknown-fields"):
            o["additionalProperties"] = False
        for v in o.values():
            strict(v)
    elif isinstance(o, list):
        for v in o:
            strict(v)
strict(schema)
doc = yaml.safe_load(open(sys.argv[2]))
if not isinstance(doc, dict) or doc.get("apiVersion") != "cert-manager.io/v1" or doc.get("kind") != "Issuer":
    print("not a cert-manager.io/v1 Issuer")
    sys.exit(1)
checker = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
errors = sorted(checker.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
for e in errors:
    print(".".join(map(str, e.absolute_path)) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;

pub const NAME: &str = "cert-manager schema";
pub const HINT: &str = "install kubernetes-validate (its Python has jsonschema): `pip install kubernetes-validate` (into a virtualenv on PATH)";

/// The interpreter of the `kubernetes-validate` script (its `#!` line).
fn python() -> Result<PathBuf, Outcome> {
    let script = find_tool("kubernetes-validate", HINT)?;
    let text = std::fs::read(&script).unwrap_or_default();
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let interpreter = String::from_utf8_lossy(first)
        .strip_prefix("#!")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.contains(' ') && Path::new(s).is_absolute());
    interpreter.map(PathBuf::from).ok_or_else(|| Outcome::Missing {
        hint: format!(
            "{HINT}; found {} without a Python interpreter named in it",
            script.display()
        ),
    })
}

/// The Issuer `rel` against the schema.
pub(super) fn job<'a>(s: &'a Scratch, rel: &str) -> Job<'a> {
    let python = python();
    let path = s.path(rel);
    let rel = rel.to_string();
    let extra = python
        .as_ref()
        .ok()
        .map(|p| format!("{} {SCHEMA_VERSION}", tool_identity(p)));
    Job::new(NAME, &rel.clone(), vec![rel.clone()], extra, move || {
        let outcome = match python {
            Ok(python) => check(&python, &path),
            Err(missing) => Ok(missing),
        };
        verdict(NAME, &rel, outcome)
    })
}

fn check(python: &Path, manifest: &Path) -> std::io::Result<Outcome> {
    let mut schema = tempfile::Builder::new()
        .prefix("deployctl-issuer-schema-")
        .suffix(".json")
        .tempfile()?;
    std::io::Write::write_all(&mut schema, SCHEMA.as_bytes())?;
    let args = [
        "-c".as_ref(),
        SCRIPT.as_ref(),
        schema.path().as_os_str(),
        manifest.as_os_str(),
    ];
    let (ok, out) = run(python, &args, &[])?;
    Ok(if ok {
        Outcome::Ok(format!("valid against {SCHEMA_VERSION}'s CRD"))
    } else if let Some(what) = out.strip_prefix("MISSING ") {
        Outcome::Missing {
            hint: format!("{HINT} ({what} in {})", python.display()),
        }
    } else {
        Outcome::Failed(out)
    })
}
