//! The rendered `Containerfile` read by a real Dockerfile parser, `dockerfile-parse` (PyPI, in
//! the tool virtualenv `scripts/setup.sh` makes): its instructions grouped into stages, each
//! stage with the labels and environment the parser resolves for it, and the exec-form JSON of
//! `ENTRYPOINT` and `HEALTHCHECK … CMD` read as BuildKit reads it (a JSON array).
//!
//! Owns: running the parser and the shape the tests assert on. Does not own: any assertion.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// Reads the Containerfile on stdin; prints every instruction (comments left out) with its
/// line, `FROM`'s image and stage name as the parser splits them, and the labels and
/// environment in force after it (reset at each `FROM`).
const PARSE: &str = r#"
import io, json, sys
from dockerfile_parse import DockerfileParser
from dockerfile_parse.parser import image_from
p = DockerfileParser(fileobj=io.BytesIO(sys.stdin.buffer.read()))
out = []
for insn, ctx in zip(p.structure, p.context_structure):
    if insn["instruction"] == "COMMENT":
        continue
    image, alias = image_from(insn["value"]) if insn["instruction"] == "FROM" else (None, None)
    out.append({"instruction": insn["instruction"], "value": insn["value"], "line": insn["startline"] + 1,
                "image": image, "alias": alias, "labels": ctx.labels, "envs": ctx.envs})
json.dump(out, sys.stdout)
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct Instruction {
    /// Upper-case: `RUN`, `COPY`, `USER`.
    pub instruction: String,
    /// The rest of the instruction, continuation lines joined.
    pub value: String,
    /// 1-based, where it starts.
    pub line: usize,
    image: Option<String>,
    alias: Option<String>,
    labels: BTreeMap<String, String>,
    envs: BTreeMap<String, String>,
}

/// One `FROM` and what follows it up to the next.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The image of `FROM`.
    pub from: String,
    /// `AS NAME`.
    pub alias: Option<String>,
    /// Every instruction after `FROM`, in order.
    pub instructions: Vec<Instruction>,
    /// The labels set in this stage, quotes removed.
    pub labels: BTreeMap<String, String>,
    /// The environment set in this stage.
    pub envs: BTreeMap<String, String>,
}

impl Stage {
    /// The values of every `name` instruction of the stage.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.instruction == name)
            .map(|i| i.value.as_str())
            .collect()
    }

    /// The value of the stage's one `name` instruction.
    pub fn one(&self, name: &str) -> &str {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "one {name} in the stage FROM {}: {all:?}", self.from);
        all[0]
    }

    /// The exec form (a JSON array of strings) of the stage's one `name` instruction.
    pub fn exec_form(&self, name: &str) -> Vec<String> {
        exec_form(self.one(name))
    }

    /// `HEALTHCHECK`: its options (`interval` → `10s`) and its command's exec form.
    pub fn healthcheck(&self) -> (BTreeMap<String, String>, Vec<String>) {
        let value = self.one("HEALTHCHECK");
        let (options, cmd) = value
            .split_once(" CMD ")
            .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {value}"));
        let options = options
            .split_whitespace()
            .map(|o| {
                let (k, v) = o
                    .strip_prefix("--")
                    .and_then(|o| o.split_once('='))
                    .unwrap_or_else(|| panic!("HEALTHCHECK option {o:?}"));
                (k.to_string(), v.to_string())
            })
            .collect();
        (options, exec_form(cmd))
    }
}

/// A JSON array of strings, as BuildKit reads an exec-form instruction.
pub fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value.trim()).unwrap_or_else(|e| panic!("not in exec form ({e}): {value}"))
}

/// A parsed Containerfile: its stages in order, the runtime stage last.
#[derive(Debug, Clone)]
pub struct Containerfile {
    pub stages: Vec<Stage>,
}

impl Containerfile {
    /// The stage named `alias` (`AS alias`).
    pub fn stage(&self, alias: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.alias.as_deref() == Some(alias))
            .unwrap_or_else(|| panic!("no stage {alias}: {:?}", self.stages))
    }

    /// The last stage: what the image runs.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("at least one FROM")
    }
}

/// The Python that has `dockerfile_parse`: the tool virtualenv's.
fn python() -> std::path::PathBuf {
    let venv = super::repo().join(".tools/venv/bin/python3");
    if venv.exists() { venv } else { "python3".into() }
}

/// `text` read by dockerfile-parse.
pub fn parse(text: &str) -> Containerfile {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 with dockerfile-parse");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the Containerfile to the parser");
    let out = child.wait_with_output().expect("the parser's output");
    assert!(
        out.status.success(),
        "dockerfile-parse failed (scripts/setup.sh installs it into .tools/venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Instruction> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    let mut stages: Vec<Stage> = Vec::new();
    for i in list {
        if i.instruction == "FROM" {
            stages.push(Stage {
                from: i.image.clone().expect("FROM's image"),
                alias: i.alias.clone(),
                instructions: Vec::new(),
                labels: BTreeMap::new(),
                envs: BTreeMap::new(),
            });
            continue;
        }
        let stage = stages
            .last_mut()
            .unwrap_or_else(|| panic!("{} before any FROM", i.instruction));
        stage.labels = i.labels.clone();
        stage.envs = i.envs.clone();
        stage.instructions.push(i);
    }
    Containerfile { stages }
}
