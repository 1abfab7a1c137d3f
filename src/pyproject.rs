//! `pyproject.toml` as a list of dependencies: `[project].dependencies` (PEP 621), what
//! `deployctl up` installs when `[app].requirements = "pyproject.toml"` — like
//! `uv pip install -r pyproject.toml` or `pip-compile pyproject.toml`. The project itself is
//! not installed: `[app].root` puts its code on the import path.

use std::path::Path;

/// Why a `pyproject.toml` gives no dependency list, with what to do about it.
#[derive(Debug)]
pub struct NoDependencies {
    pub message: String,
    pub hint: String,
}

/// The requirement strings of `[project].dependencies`.
pub fn dependencies(path: &Path) -> Result<Vec<String>, NoDependencies> {
    let shown = crate::spec::display_path(path);
    let fail = |message: String, hint: &str| NoDependencies {
        message,
        hint: hint.to_string(),
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {shown}: {e}"), "check the path"))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        fail(
            format!("{shown} is not valid TOML: {}", e.message()),
            "fix it, or list the dependencies in requirements.txt",
        )
    })?;
    let project = doc.get("project").and_then(|p| p.as_table());
    let dynamic = project
        .and_then(|p| p.get("dynamic"))
        .and_then(|d| d.as_array())
        .is_some_and(|d| d.iter().any(|v| v.as_str() == Some("dependencies")));
    if dynamic {
        return Err(fail(
            format!("{shown} declares its dependencies as dynamic (computed by its build backend)"),
            "list them in requirements.txt and set `[app] requirements = \"requirements.txt\"`",
        ));
    }
    let Some(deps) = project.and_then(|p| p.get("dependencies")) else {
        let poetry = doc
            .get("tool")
            .and_then(|t| t.get("poetry"))
            .and_then(|p| p.get("dependencies"))
            .is_some();
        return Err(if poetry {
            fail(
                format!("{shown} lists its dependencies under [tool.poetry.dependencies], not [project].dependencies"),
                "export them: `poetry export -f requirements.txt -o requirements.txt`, then \
                 `[app] requirements = \"requirements.txt\"`",
            )
        } else {
            fail(
                format!("{shown} has no [project].dependencies"),
                "add `dependencies = [\"flask>=3\"]` to its [project] table, or list them in requirements.txt",
            )
        });
    };
    let list = deps.as_array().ok_or_else(|| {
        fail(
            format!("[project].dependencies in {shown} is not a list"),
            "write it as a list of requirement strings: dependencies = [\"flask>=3\"]",
        )
    })?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                fail(
                    format!("[project].dependencies in {shown} holds {v}, which is not a requirement string"),
                    "write each as a string, e.g. \"flask>=3\"",
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str) -> Result<Vec<String>, NoDependencies> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pyproject.toml");
        std::fs::write(&p, text).unwrap();
        dependencies(&p)
    }

    #[test]
    fn lists_and_refusals() {
        assert_eq!(
            deps("[project]\nname = \"x\"\ndependencies = [\"flask>=3\", \"gunicorn; sys_platform == 'linux'\"]\n")
                .unwrap(),
            ["flask>=3", "gunicorn; sys_platform == 'linux'"]
        );
        assert!(deps("[project]\nname = \"x\"\ndependencies = []\n").unwrap().is_empty());
        let e = deps("[project]\nname = \"x\"\ndynamic = [\"dependencies\"]\n").unwrap_err();
        assert!(e.message.contains("dynamic"), "{}", e.message);
        let e = deps("[tool.poetry.dependencies]\nflask = \"^3\"\n").unwrap_err();
        assert!(e.hint.contains("poetry export"), "{}", e.hint);
        let e = deps("[tool.black]\nline-length = 100\n").unwrap_err();
        assert!(e.message.contains("has no [project].dependencies"), "{}", e.message);
    }
}
