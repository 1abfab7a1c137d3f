//! Quoting and escaping for each config language and context, done in Rust so templates never
//! have to.
//!
//! One function per language and context. Each states the rule it implements and where the
//! rule comes from — the tool's manual or, where the manual is silent, its source — for the
//! versions deployctl targets (reference/deploy-configs.md: nginx 1.22, Apache httpd 2.4,
//! uWSGI 2.0.21, systemd 252, CPython 3). `tests/escaping.rs` has the real tools read rendered values back.
//!
//! Some values have no representation in a language: uWSGI expands `$(…)`, `@(…)` and `%(…)`
//! in every option value and has no escape; no line-based format here can hold a line break.
//! The spec refuses those values with the file, key and line, so the escaping functions never
//! see them. Those refusal rules (the `*_problem` functions, [`nginx_server_name`]) live in
//! `deployctl_common::spec::refusals`, beside the spec that applies them (the embedded server
//! shares that crate and must not link the renderer); they are re-exported here so that each
//! language's rules, what is escaped and what is refused, read together.
//!
//! This module is a leaf: pure functions of strings, used by the view models, the nginx
//! wrapper, `init` (TOML), the hints that show a command (shell), and `orchestrate` for the
//! one path it passes to uWSGI itself (a generation's ini). Nothing else quotes.

use std::fmt::Write as _;

pub use crate::spec::refusals::{
    control_char_problem, gunicorn_problem, nginx_server_name, systemd_executable_problem, url_prefix_problem,
    uwsgi_problem,
};

// ---------------------------------------------------------------------------------------------
// systemd units (systemd.syntax(7), systemd.unit(5), systemd.service(5), systemd.exec(5)).

/// A value that systemd expands specifiers in: `%` is doubled.
///
/// Rule (systemd.unit(5) "Specifiers"): `%%` is a single `%`; every other `%X` is a specifier
/// (`%n`, `%h`, …) or an error.
fn systemd_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// The value of `WorkingDirectory=`: one absolute path as the rest of the line.
///
/// Rule (systemd.exec(5) `WorkingDirectory=`; systemd 252 `config_parse_working_directory`):
/// the value is the whole line after `=` with surrounding whitespace stripped, specifiers
/// expanded, then simplified as a path. Quotes and backslashes are literal — a quoted path is
/// "not absolute" — so nothing is quoted; `%` is doubled. A line ending in `\` continues on the
/// next one (systemd.syntax(7)), and trailing whitespace would be stripped, so a path ending in
/// either gets a `/`, which the path simplification removes again.
pub fn systemd_path(p: &str) -> String {
    let mut out = systemd_specifiers(p);
    if out.ends_with(|c: char| c.is_whitespace() || c == '\\') {
        out.push('/');
    }
    out
}

/// The value of `ListenStream=` (a unix socket path or an address) and `Description=`: the
/// rest of the line, specifiers expanded, otherwise literal.
///
/// Rule (systemd.socket(5) `ListenStream=`; systemd 252 `config_parse_socket_listen`): a value
/// starting with `/` is a unix socket path taken as written after specifier expansion, so only
/// `%` is doubled. Socket paths end in `.sock`, never in whitespace.
pub fn systemd_text(s: &str) -> String {
    systemd_specifiers(s)
}

/// Whether a word must be quoted in a systemd word list (`ExecStart=`, `ReadWritePaths=`, …).
///
/// Unquoted, a word ends at whitespace; a quote anywhere starts a quoted part; a backslash
/// starts an escape; in `ExecStart=` a lone `;` separates commands; in `Bind*Paths=` a `:`
/// separates source and destination (the path lists quote it too).
fn systemd_needs_quotes(s: &str, colon: bool) -> bool {
    s.is_empty()
        || s.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ';') || (colon && c == ':')
        })
}

/// `s` double-quoted with `\` and `"` backslash-escaped and control characters as `\xNN`.
fn systemd_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One word of `ExecStart=` / `ExecReload=`.
///
/// Rule (systemd.service(5) "Command lines"): the line is split on whitespace; a word in double
/// quotes may hold whitespace; C escapes (`\\`, `\"`, `\xNN`) are decoded; specifiers are
/// expanded when the unit is loaded (`%%` is `%`) and `$NAME`/`${NAME}` when the command runs
/// (`$$` is `$`); a lone `;` separates commands. So `%` and `$` are doubled, and a word that is
/// empty or holds whitespace, a quote, `\`, `;` or a control character is double-quoted
/// with `\`, `"` and control characters escaped. The program (first word) is
/// [`systemd_exec_program`]; it is an absolute path, so it never starts with one of the
/// prefixes `-@:+!`.
pub fn systemd_exec_word(s: &str) -> String {
    let escaped = systemd_specifiers(s).replace('$', "$$");
    if systemd_needs_quotes(&escaped, false) {
        systemd_quoted(&escaped)
    } else {
        escaped
    }
}

/// The program of `ExecStart=`, its first word: like [`systemd_exec_word`] but with `$` as
/// written.
///
/// Rule (systemd.service(5) "Command lines"; seen with systemd 252): variables are substituted
/// in the arguments only, so `$$` in the program's path stays `$$` ("Command …/$$x/bin/gunicorn
/// is not executable"). Paths holding `\`, `"` or `'` are refused by the spec
/// ([`systemd_executable_problem`]).
pub fn systemd_exec_program(path: &str) -> String {
    let escaped = systemd_specifiers(path);
    if systemd_needs_quotes(&escaped, false) {
        systemd_quoted(&escaped)
    } else {
        escaped
    }
}

/// A command line for `ExecStart=`: the program by [`systemd_exec_program`], every argument by
/// [`systemd_exec_word`].
pub fn systemd_exec(words: &[String]) -> String {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                systemd_exec_program(w)
            } else {
                systemd_exec_word(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One path of a whitespace-separated path list: `ReadWritePaths=`, `BindReadOnlyPaths=`
/// (the caller puts a `-` in front for "a missing path is no error").
///
/// Rule (systemd.exec(5) "Sandboxing"; systemd 252 `config_parse_namespace_path_strv` and
/// `config_parse_bind_paths`): items are split on whitespace, `Bind*Paths=` items also on `:`
/// (source:destination); quotes keep whitespace and `:` inside one item and a backslash makes
/// the next character literal; specifiers are expanded (`%%`). `$` means nothing here. A path
/// that needs it is double-quoted with `\` and `"` escaped.
pub fn systemd_path_item(p: &str) -> String {
    let escaped = systemd_specifiers(p);
    if systemd_needs_quotes(&escaped, true) {
        systemd_quoted(&escaped)
    } else {
        escaped
    }
}

/// One `Environment=` assignment, `"NAME=value"`.
///
/// Rule (systemd.exec(5) `Environment=`): a whitespace-separated list of assignments; double
/// quotes let one hold spaces; C escapes are decoded, so `\` and `"` are backslash-escaped;
/// specifiers are expanded (`%%`); "the `$` character has no special meaning". Control
/// characters are refused by the spec ([`control_char_problem`]). Always quoted.
pub fn systemd_env(name: &str, value: &str) -> String {
    format!(
        "\"{}={}\"",
        name,
        systemd_specifiers(value).replace('\\', "\\\\").replace('"', "\\\"")
    )
}

// ---------------------------------------------------------------------------------------------
// nginx (nginx 1.22: src/core/ngx_conf_file.c, src/http/ngx_http_script.c, src/core/ngx_hash.c).

/// The variable that holds a literal `$` for [`nginx_script`], defined by [`NGINX_DOLLAR_GEO`].
pub const NGINX_DOLLAR_VAR: &str = "$deployctl_dollar";

/// The http-level block defining [`NGINX_DOLLAR_VAR`]. `geo` values are plain strings (no
/// variables), so `"$"` is a dollar sign. Several sites may define it: the same variable
/// defined twice by `geo` is accepted (`nginx -t`).
pub const NGINX_DOLLAR_GEO: &str = "geo $deployctl_dollar { default \"$\"; }";

/// An nginx directive argument taken literally: paths of `include`, `pid`, `*_temp_path`,
/// `error_log`, a `server` in `upstream`, `location` prefixes, `server_name`.
///
/// Rule (nginx 1.22 `ngx_conf_read_token`): an unquoted argument ends at whitespace, `;`, `{`
/// or `}`; `#` at its start begins a comment and a quote begins a quoted argument; in any
/// argument `\\`, `\"`, `\'` stand for the character and `\t`, `\r`, `\n` for the control
/// character. So an argument holding any of these is double-quoted with `\` and `"` escaped.
pub fn nginx_literal(s: &str) -> String {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '#' | '\\' | '$'))
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// The path of an nginx `include`.
///
/// Rule (nginx 1.22 `ngx_conf_include`): a path holding `*`, `?` or `[` is a glob(3) pattern —
/// one that matches nothing includes nothing, silently, so a site under `/srv/app[2]/` would
/// be checked and served as an empty configuration. In a pattern a backslash quotes the next
/// character, so those characters (and `\`, `]`) are backslash-escaped before the argument is
/// quoted as [`nginx_literal`]; a path without them is not a pattern and is taken as written.
pub fn nginx_include(path: &str) -> String {
    if path.contains(['*', '?', '[']) {
        let mut pattern = String::with_capacity(path.len() + 8);
        for c in path.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        nginx_literal(&pattern)
    } else {
        nginx_literal(path)
    }
}

/// An nginx argument of a directive that expands variables: `alias`, `root`, `return`,
/// `add_header`, …
///
/// Rule (nginx 1.22 `ngx_http_script_compile`): `$name` and `${name}` are variables and there
/// is no escape for a literal `$`. Each `$` is written `${deployctl_dollar}`, a variable that
/// holds `$` (the site then needs [`NGINX_DOLLAR_GEO`]: see [`nginx_needs_dollar`]); `{` right
/// after it is safe because the braces close the name. Then quoted as [`nginx_literal`].
pub fn nginx_script(s: &str) -> String {
    let var = &NGINX_DOLLAR_VAR[1..];
    let q = nginx_literal(s);
    if s.contains('$') {
        q.replace('$', &format!("${{{var}}}"))
    } else {
        q
    }
}

/// Whether a value given to [`nginx_script`] needs [`NGINX_DOLLAR_GEO`] in the site.
pub fn nginx_needs_dollar(s: &str) -> bool {
    s.contains('$')
}

/// FNV-1a, 32 bits: a stable hash for short names (not for security).
fn fnv1a32(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// A variable name of an nginx site, unique per `key` (the app name) and short.
///
/// Rule (nginx 1.22 `ngx_hash_init`, run for `variables_hash`): an entry takes 8 + align8(len +
/// 2) bytes and a bucket also holds an 8-byte terminator, so with the default
/// `variables_hash_bucket_size` of 64 a variable name longer than 46 bytes fails the whole
/// configuration ("could not build variables_hash"). Names derived from an app name of up to 64
/// characters would; `$deployctl_<8 hex digits>_<suffix>` stays short whatever the name, and
/// two names that differ only in `-`/`_`/`.` still get different variables.
pub fn nginx_variable(key: &str, suffix: &str) -> String {
    format!("$deployctl_{:08x}_{suffix}", fnv1a32(key))
}

/// The `server_names_hash_bucket_size` the names need when it is more than nginx's default.
///
/// Rule (nginx 1.22 `ngx_hash_init`): as for [`nginx_variable`], a name longer than 46 bytes
/// does not fit the default 64-byte bucket (the size of a CPU cache line on x86-64) and
/// `nginx -t` fails with "could not build server_names_hash". `None` when the default is
/// enough; otherwise the next power of two.
pub fn nginx_server_names_bucket_size<S: AsRef<str>>(names: &[S]) -> Option<u32> {
    const DEFAULT: usize = 64;
    let need = names
        .iter()
        .map(|n| 8 + (n.as_ref().len() + 2).div_ceil(8) * 8 + 8)
        .max()
        .unwrap_or(0);
    (need > DEFAULT).then(|| need.next_power_of_two() as u32)
}

// ---------------------------------------------------------------------------------------------
// uWSGI ini files (uWSGI 2.0.21: core/ini.c, core/utils.c `magic_sub`, core/uwsgi.c).

/// A uWSGI ini value.
///
/// Rule (uWSGI docs "Configuring uWSGI", "Magic variables"; 2.0.21 `magic_sub`, `ini_get_key`,
/// `ini_lstrip`/`ini_rstrip`): the whole file goes through magic-variable substitution first —
/// `%X` is replaced by its value, an unknown `X` by nothing, and `%%` by `%` — so `%` is
/// doubled. A line is `key = value` split at the first `=`, the value stripped of spaces, tabs
/// and CRs; `;` and `#` start comments only at the start of a line. `$(`, `@(` and `%(` cannot
/// be escaped and are refused by the spec ([`uwsgi_problem`]).
pub fn uwsgi(s: &str) -> String {
    s.replace('%', "%%")
}

/// A directory path as a uWSGI ini value ([`uwsgi`]): one ending in whitespace gets a `/`,
/// which keeps the whitespace from being stripped and names the same directory.
pub fn uwsgi_path(p: &str) -> String {
    let mut out = uwsgi(p);
    if out.ends_with(|c: char| c.is_whitespace()) {
        out.push('/');
    }
    out
}

/// The argument of `uwsgi --ini`: the path of the ini file.
///
/// Rule (uWSGI docs "Configuring uWSGI": `--ini file.ini:section`; 2.0.21 `uwsgi_ini_config`):
/// the last `:` of the argument starts the name of the section to read, so a path holding a
/// `:` is read from the wrong file. Such a path gets `:uwsgi` (the section the file uses)
/// after it; others are left as they are.
pub fn uwsgi_ini_arg(path: &str) -> String {
    if path.contains(':') {
        format!("{path}:uwsgi")
    } else {
        path.to_string()
    }
}

/// A PCRE pattern matching `s` literally, for uWSGI's routing and `static-expires-*` options.
///
/// Rule (PCRE "Backslash": a backslash before a character that is not a letter or digit takes
/// away any special meaning it may have): every ASCII character other than letters, digits,
/// `/`, `-` and `_` is escaped; other characters are literal as they are.
pub fn pcre_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_')) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Python (Gunicorn's config file is Python source).

/// A Python string literal.
///
/// Rule (Python reference "String and Bytes literals"): JSON string syntax is a subset —
/// `"…"` with `\"`, `\\`, `\n`, `\uXXXX` escapes — and the file is UTF-8 (PEP 3120).
pub fn python(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

// ---------------------------------------------------------------------------------------------
// TOML (the `deploy.toml` that `init` writes) and POSIX shell (commands shown in hints).

/// A TOML basic string.
///
/// Rule (TOML 1.0 "String"): `"…"` with `\"`, `\\` and control characters escaped; the `toml`
/// crate's own serializer writes it, so it reads back as written.
pub fn toml(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// One word as a POSIX shell reads it back: as is when every character is plain, else in
/// single quotes.
///
/// Rule (POSIX.1-2017 XCU 2.2.2 "Single-Quotes"): inside single quotes every character is
/// literal and a single quote cannot appear, so each `'` becomes `'\''` (close, escaped
/// quote, reopen).
pub fn shell(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./+-:=@,%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// YAML (Kubernetes manifests, the Compose file) and the Containerfile.

/// A YAML scalar that reads back as exactly `s`, a string, whatever it holds: always
/// double-quoted, so no plain-scalar rule applies (`yes`, `on`, `null`, `1e3`, `0o17`, a
/// leading `*`, `&`, `!`, `-`, `:` or `#` are strings, not booleans, numbers, aliases or
/// comments, in YAML 1.1 and 1.2 readers alike).
///
/// Rule (YAML 1.2.2 §7.3.1 "Double-Quoted Style", §5.7 "Escaped Characters"): inside `"…"`,
/// `\` and `"` are escaped by a backslash; every other character is literal except line
/// breaks, which fold. So `"` and `\` are escaped, and C0 controls, DEL, the C1 controls
/// (NEL, U+0085, is a line break in YAML 1.1), U+2028/U+2029 (line and paragraph separators)
/// and the byte order mark are escaped (`\n`, `\t`, `\r`, else `\uXXXX`). Everything else
/// is printable UTF-8, written as is.
pub fn yaml(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of strings as a YAML flow sequence: `["a", "b"]`, each item [`yaml`].
pub fn yaml_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| yaml(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A value of a Compose file: [`yaml`], with `$` doubled.
///
/// Rule (Compose specification, "Interpolation"): Compose substitutes `$VAR` and `${VAR}` from
/// its environment in every string value of the file, unquoted or quoted alike; `$$` is a
/// literal `$`. So an environment value `50$ off` or a path holding `$x` must be written
/// `50$$ off`, `$$x`.
pub fn compose(s: &str) -> String {
    yaml(&s.replace('$', "$$"))
}

/// A list of strings as a flow sequence of Compose values ([`compose`]).
pub fn compose_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| compose(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A read-only bind mount in a Compose service's `volumes`: the short syntax
/// `"SOURCE:TARGET:ro"` when neither path holds a `:`, else the long syntax as a flow mapping
/// `{type: bind, source: "…", target: "…", read_only: true}`.
///
/// Rule (Compose specification, `volumes` "Short syntax"; docker-compose 1.29
/// `VolumeSpec._parse_unix`, compose-go's `ParseVolume`): the short syntax is split at every
/// `:` and has no escape, so a source holding one is read as other fields or refused ("has
/// incorrect format, should be external:internal[:mode]"); the long syntax's `source` and
/// `target` are plain strings. Every value is a [`compose`] value (`$` doubled).
pub fn compose_bind_mount_ro(source: &str, target: &str) -> String {
    if source.contains(':') || target.contains(':') {
        format!(
            "{{type: bind, source: {}, target: {}, read_only: true}}",
            compose(source),
            compose(target)
        )
    } else {
        compose(&format!("{source}:{target}:ro"))
    }
}

/// A Containerfile's exec form (`ENTRYPOINT`, `CMD`, `HEALTHCHECK CMD`): a JSON array of
/// strings.
///
/// Rule (Dockerfile reference, "Shell and exec form"): the exec form is parsed as a JSON
/// array, so JSON's string escapes apply and no shell sees the words.
pub fn containerfile_exec<S: AsRef<str>>(words: &[S]) -> String {
    let list: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

/// The sources and destination of a Containerfile's `COPY` in exec (JSON) form: each word
/// with `\\`, `$`, `'` and `"` backslash-escaped.
///
/// Rule (Dockerfile reference, "Environment replacement"; BuildKit's `shell.Lex`): `COPY`'s
/// arguments, JSON form included, go through word processing after the JSON is parsed: `$VAR`
/// is substituted, quotes are removed and a backslash escapes the next character. Escaping
/// those four makes every character literal.
pub fn containerfile_copy<S: AsRef<str>>(words: &[S]) -> String {
    let escaped: Vec<String> = words
        .iter()
        .map(|w| {
            let mut out = String::new();
            for c in w.as_ref().chars() {
                if matches!(c, '\\' | '$' | '\'' | '"') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        })
        .collect();
    containerfile_exec(&escaped)
}

/// A path in a `.dockerignore` file, matched from the root of the build context: the
/// pattern characters `*`, `?`, `[`, `]` and `\\` backslash-escaped, and a first `#` or `!`
/// too (a comment, an exception).
///
/// Rule (Dockerfile reference, ".dockerignore file"; Go's `filepath.Match`): lines are
/// patterns relative to the root of the context, in which `*`, `?` and `[…]` match and `\\`
/// escapes; a line starting with `#` is a comment and one starting with `!` an exception.
/// No leading `/`: BuildKit and a context's `.dockerignore` in podman strip it, but podman
/// 4.3's `--ignorefile` does not, and then the pattern matches nothing (found by
/// tests/image.rs: the local virtualenv reached the image).
pub fn dockerignore_path(p: &str) -> String {
    let mut out = String::new();
    for (i, c) in p.chars().enumerate() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') || (i == 0 && matches!(c, '#' | '!')) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Containerfile value in double quotes (`LABEL k="v"`, `ENV`): `\` and `"` escaped.
///
/// Rule (Dockerfile reference, "Environment replacement" and `LABEL`): in a double-quoted
/// word a backslash escapes the next character and `$` starts a variable, so `\`, `"` and
/// `$` are escaped; a line break would end the instruction and is refused by the spec
/// (values here are names, image references and paths).
pub fn containerfile_word(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod yaml_tests {
    use super::*;

    /// Every value a YAML reader could take for something other than the string: read back
    /// by serde_yaml (YAML 1.2, as Kubernetes' reader) as exactly the string.
    #[test]
    fn yaml_scalars_read_back_as_the_same_string() {
        let nasty = [
            "",
            "yes",
            "no",
            "on",
            "off",
            "true",
            "null",
            "~",
            "1e3",
            "0o17",
            "0x1f",
            "012",
            "1_000",
            ".inf",
            "-",
            "- a",
            "? a",
            ": a",
            "a: b",
            "a #b",
            "#c",
            "*alias",
            "&anchor",
            "!tag",
            "%TAG",
            "@x",
            "`x",
            "|",
            ">",
            "'q'",
            "\"d\"",
            "back\\slash",
            "line\nbreak",
            "tab\tx",
            "cr\rx",
            "nul\0x",
            "nel\u{85}x",
            "ls\u{2028}x",
            "bom\u{feff}x",
            "del\u{7f}x",
            " lead",
            "trail ",
            "{a: 1}",
            "[1, 2]",
            "ünï©ødé 🚀",
            "---",
            "...",
        ];
        for s in nasty {
            let doc = format!("k: {}\n", yaml(s));
            let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
            assert_eq!(v["k"].as_str(), Some(s), "{doc:?}");
        }
        let list = format!("k: {}\n", yaml_list(&["a", "yes", "x\"y"]));
        let v: serde_yaml::Value = serde_yaml::from_str(&list).expect("a list");
        let items: Vec<&str> = v["k"]
            .as_sequence()
            .expect("a sequence")
            .iter()
            .filter_map(|i| i.as_str())
            .collect();
        assert_eq!(items, ["a", "yes", "x\"y"]);
    }

    /// A pair under `/srv/tls:2/` was mounted as `"/srv/tls:2/cert.pem:/etc/…:ro"`, which
    /// Compose splits at every `:`.
    #[test]
    fn compose_mount_of_a_path_with_a_colon_is_the_long_syntax() {
        assert_eq!(
            compose_bind_mount_ro("/srv/tls/c.pem", "/etc/nginx/tls/fullchain.pem"),
            "\"/srv/tls/c.pem:/etc/nginx/tls/fullchain.pem:ro\""
        );
        let item = compose_bind_mount_ro("/srv/tls:2/$x \"c\".pem", "/etc/nginx/tls/fullchain.pem");
        let v: serde_yaml::Value = serde_yaml::from_str(&format!("- {item}\n")).expect("YAML");
        assert_eq!(v[0]["type"].as_str(), Some("bind"));
        assert_eq!(v[0]["source"].as_str(), Some("/srv/tls:2/$$x \"c\".pem"));
        assert_eq!(v[0]["target"].as_str(), Some("/etc/nginx/tls/fullchain.pem"));
        assert_eq!(v[0]["read_only"].as_bool(), Some(true));
    }

    #[test]
    fn containerfile_exec_is_a_json_array() {
        let words = ["/app/.venv/bin/python", "-c", "print(\"x\")\nexit(0)"];
        let text = containerfile_exec(&words);
        let back: Vec<String> = serde_json::from_str(&text).expect("JSON");
        assert_eq!(back, words);
        assert_eq!(containerfile_word("a\"b$c\\"), "\"a\\\"b\\$c\\\\\"");
    }

    #[test]
    fn containerfile_copy_words_and_dockerignore_paths_are_literal() {
        let text = containerfile_copy(&["req $x 'a' \"b\" c\\d.txt", "/app/x"]);
        let back: Vec<String> = serde_json::from_str(&text).expect("JSON");
        assert_eq!(back, ["req \\$x \\'a\\' \\\"b\\\" c\\\\d.txt", "/app/x"]);
        assert_eq!(dockerignore_path("env"), "env");
        assert_eq!(dockerignore_path("#v*[1]?\\"), "\\#v\\*\\[1\\]\\?\\\\");
        assert_eq!(dockerignore_path("!v/#w!"), "\\!v/#w!");
    }
}

#[cfg(test)]
mod toml_shell_tests {
    use super::*;

    #[test]
    fn apache_arguments_escape_backslash_and_quote_only() {
        assert_eq!(apache("/srv/my app"), "\"/srv/my app\"");
        assert_eq!(apache(r#"a"b\c$d%e"#), r#""a\"b\\c$d%e""#);
        // Substituted into another quoted argument, the value is escaped once more.
        assert_eq!(apache_variable(r#"/r"d"#), r#""/r\\\"d""#);
        assert!(apache_problem("/a/${HOME}").is_some());
        assert!(apache_problem("/a/$HOME/%{x}").is_none());
    }

    #[test]
    fn toml_strings_read_back() {
        for v in ["plain", "a \"quoted\" \\ path", "tab\there", "ü $ %"] {
            let doc = format!("k = {}", toml(v));
            let parsed: toml::Table = doc.parse().expect("valid TOML");
            assert_eq!(parsed["k"].as_str(), Some(v), "{doc}");
        }
    }

    #[test]
    fn shell_words_read_back() {
        for v in ["/srv/app", "my project", "it's", "$HOME; rm -rf /", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell(v)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), v, "{}", shell(v));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apache httpd (core's ap_getword_conf and ap_resolve_env; seen with Apache 2.4.71).

/// One argument of an Apache httpd directive (a path, a URL, a header value), double-quoted.
///
/// Rule (httpd `server/util.c` `ap_getword_conf`/`substring_conf`): an argument in double
/// quotes may hold whitespace; inside it `\\` is one backslash and `\"` one quote, every other
/// character is literal. `$` and `%` mean nothing in a quoted path or URL (`$1` only in
/// `AliasMatch`, `%{…}` only in expressions and a few mod_wsgi values): seen with `apache2`
/// serving a file from a directory named `q"d\e$f%g`. `${NAME}` is different: it is
/// substituted in the whole line before the words are split, and has no escape (`\${` becomes
/// a backslash and the value) — a value holding `${` is refused ([`apache_problem`]).
pub fn apache(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The value of `Define NAME VALUE` for a variable used inside quoted arguments
/// (`"${NAME}/httpd.pid"`): `${NAME}` is replaced by the value as written, before that
/// argument's own quotes are read, so the value holds `s` already escaped for them and is
/// quoted once more for `Define` itself.
pub fn apache_variable(s: &str) -> String {
    let once = apache(s);
    apache(&once[1..once.len() - 1])
}

/// Why `s` cannot be an argument of an Apache directive, if it cannot: `${` is a variable
/// reference in every line of the configuration and cannot be escaped.
pub fn apache_problem(s: &str) -> Option<String> {
    s.contains("${").then(|| {
        format!(
            "{s:?} holds `${{`, which Apache httpd substitutes in every line of its configuration and cannot escape"
        )
    })
}

/// The `ProxyPass` URL of an app server on a unix socket: `unix:PATH|SCHEME://localhost/`
/// (then quoted as an argument by [`apache`]).
///
/// Rule (httpd 2.4 mod_proxy `ap_proxy_de_socketfy` and `fix_uds_filename`; seen with Apache
/// 2.4.71 proxying to sockets named `a|b`, `q?x`, `h#x`, `p%41` and `sp ace`): the socket's
/// path ends at the first `|`, and `unix:PATH` is parsed as a URI (`apr_uri_parse`), whose
/// path ends at `?` or `#`; it is not percent-decoded (`%7C` names a file with those three
/// characters). So a path holding `|`, `?` or `#` has no representation
/// ([`apache_proxy_unix_problem`]); every other character is taken as written.
pub fn apache_proxy_unix(path: &str, scheme: &str) -> String {
    format!("unix:{path}|{scheme}://localhost/")
}

/// Why `path` cannot be the socket of [`apache_proxy_unix`], if it cannot.
pub fn apache_proxy_unix_problem(path: &str) -> Option<String> {
    path.chars().find(|c| matches!(c, '|' | '?' | '#')).map(|c| {
        format!(
            "the socket {path:?} holds `{c}`, which Apache's mod_proxy reads as the end of the socket's path in \
             `ProxyPass \"unix:PATH|URL\"` and cannot escape"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local run's socket under a project named `a|b` was written into `unix:…|http://…`
    /// as it stands: Apache cut the path at the `|` and refused the URL ("ProxyPass URL must
    /// be absolute!"); under `q?x` or `h#x` it connected to another path.
    #[test]
    fn apache_proxy_to_a_socket_whose_path_holds_a_pipe_is_refused() {
        assert_eq!(
            apache_proxy_unix("/srv/my app/50%/x.sock", "http"),
            "unix:/srv/my app/50%/x.sock|http://localhost/"
        );
        assert_eq!(apache_proxy_unix_problem("/srv/a:b @c %41 $d/x.sock"), None);
        for bad in ["/srv/a|b/x.sock", "/srv/q?x/x.sock", "/srv/h#x/x.sock"] {
            let why = apache_proxy_unix_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(why.contains("cannot escape"), "{why}");
        }
    }

    #[test]
    fn python_literals() {
        assert_eq!(python("a\"b"), r#""a\"b""#);
        assert_eq!(python("a\\b ü $ %"), r#""a\\b ü $ %""#);
    }

    #[test]
    fn refusals() {
        assert_eq!(control_char_problem("/srv/a b"), None);
        assert!(control_char_problem("/srv/a\nb").unwrap().contains("U+000A"));
        assert!(control_char_problem("a\u{85}").is_some());
        assert_eq!(uwsgi_problem("/srv/$x/@y/%z/(w)"), None);
        for bad in ["/srv/$(HOME)", "/srv/@(exec://id)", "/srv/%(chdir)"] {
            assert!(uwsgi_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(systemd_executable_problem("/srv/my app/$x%/bin/gunicorn"), None);
        for bad in ["/srv/bob's/bin/x", "/srv/\"q\"/x", "/srv/a\\b/x"] {
            assert!(systemd_executable_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(gunicorn_problem("/srv/app"), None);
        assert!(gunicorn_problem("/srv/app ").is_some());
    }

    #[test]
    fn systemd_paths() {
        assert_eq!(systemd_path("/srv/app"), "/srv/app");
        assert_eq!(
            systemd_path("/srv/my app"),
            "/srv/my app",
            "not quoted: quotes are literal"
        );
        assert_eq!(systemd_path("/srv/50%"), "/srv/50%%");
        assert_eq!(systemd_path("/srv/\"q\" $x \\y"), "/srv/\"q\" $x \\y");
        assert_eq!(systemd_path("/srv/trailing "), "/srv/trailing /");
        assert_eq!(systemd_path("/srv/back\\"), "/srv/back\\/", "no line continuation");
        assert_eq!(systemd_text("/run/50%.sock"), "/run/50%%.sock");
    }

    #[test]
    fn systemd_exec_words() {
        assert_eq!(systemd_exec_word("/srv/app"), "/srv/app");
        assert_eq!(systemd_exec_word("/srv/my app"), "\"/srv/my app\"");
        assert_eq!(systemd_exec_word("50%"), "50%%");
        assert_eq!(systemd_exec_word("$HOME"), "$$HOME");
        assert_eq!(systemd_exec_word(""), "\"\"");
        assert_eq!(systemd_exec_word(";"), "\";\"");
        assert_eq!(systemd_exec_word("a'b"), "\"a'b\"");
        assert_eq!(systemd_exec_word("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(systemd_exec_word("unix:/run/x.sock"), "unix:/run/x.sock");
        assert_eq!(systemd_exec_word("a\tb"), "\"a\\x09b\"");
        assert_eq!(
            systemd_exec(&["/bin/x y".into(), "--chdir".into(), "/a%".into()]),
            "\"/bin/x y\" --chdir /a%%"
        );
        assert_eq!(systemd_exec_program("/srv/$x%/bin/gunicorn"), "/srv/$x%%/bin/gunicorn");
        assert_eq!(
            systemd_exec(&["/srv/$x y/bin/g".into(), "/srv/$x".into()]),
            "\"/srv/$x y/bin/g\" /srv/$$x"
        );
    }

    #[test]
    fn systemd_lists_and_env() {
        assert_eq!(systemd_path_item("/srv/app"), "/srv/app");
        assert_eq!(systemd_path_item("/srv/my app"), "\"/srv/my app\"");
        assert_eq!(systemd_path_item("/srv/a:b"), "\"/srv/a:b\"", "`:` splits bind paths");
        assert_eq!(systemd_path_item("/srv/$x%"), "/srv/$x%%", "`$` is literal in paths");
        assert_eq!(systemd_path_item("/srv/\"\\"), r#""/srv/\"\\""#);
        assert_eq!(systemd_env("A", "x \"y\""), r#""A=x \"y\"""#);
        assert_eq!(systemd_env("A", "50% $HOME \\n"), r#""A=50%% $HOME \\n""#);
    }

    #[test]
    fn nginx_arguments() {
        assert_eq!(nginx_literal("/srv/static/"), "/srv/static/");
        assert_eq!(nginx_literal("/srv/my static/"), "\"/srv/my static/\"");
        assert_eq!(nginx_literal("a;b{c}#d"), "\"a;b{c}#d\"");
        assert_eq!(nginx_literal("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(nginx_literal("/srv/$x/"), "\"/srv/$x/\"", "literal: `$` kept");
        assert_eq!(nginx_script("/srv/static/"), "/srv/static/");
        assert_eq!(nginx_script("/srv/$x{y}/"), "\"/srv/${deployctl_dollar}x{y}/\"");
        assert!(nginx_needs_dollar("/a$b") && !nginx_needs_dollar("/a"));
        assert!(NGINX_DOLLAR_GEO.contains(NGINX_DOLLAR_VAR));
    }

    #[test]
    fn nginx_includes() {
        assert_eq!(nginx_include("/etc/nginx/site.conf"), "/etc/nginx/site.conf");
        assert_eq!(
            nginx_include("/srv/a\\b/site.conf"),
            r#""/srv/a\\b/site.conf""#,
            "no pattern: as written"
        );
        assert_eq!(nginx_include("/srv/app[2]/site.conf"), r#""/srv/app\\[2\\]/site.conf""#);
        assert_eq!(nginx_include("/srv/*\\?/x"), r#""/srv/\\*\\\\\\?/x""#);
    }

    #[test]
    fn nginx_variables_are_short_and_distinct() {
        let long = "a".repeat(64);
        let v = nginx_variable(&long, "connection");
        assert!(v.len() - 1 <= 46, "{v}");
        assert_eq!(v, nginx_variable(&long, "connection"), "stable");
        assert_ne!(nginx_variable("a-b", "c"), nginx_variable("a_b", "c"));
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
    }

    #[test]
    fn nginx_bucket_sizes() {
        assert_eq!(nginx_server_names_bucket_size(&["localhost"]), None);
        assert_eq!(nginx_server_names_bucket_size(&["a".repeat(46)]), None);
        assert_eq!(nginx_server_names_bucket_size(&["a".repeat(47)]), Some(128));
        assert_eq!(nginx_server_names_bucket_size(&["a".repeat(111)]), Some(256));
        assert_eq!(nginx_server_names_bucket_size(&["a".repeat(253)]), Some(512));
        assert_eq!(nginx_server_names_bucket_size::<&str>(&[]), None);
    }

    #[test]
    fn nginx_server_names() {
        let ok = |n: &str| nginx_server_name(n).unwrap();
        assert_eq!(ok("localhost"), "localhost");
        assert_eq!(ok("Example.COM"), "example.com");
        assert_eq!(ok("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("*.bücher.example"), "*.xn--bcher-kva.example");
        assert_eq!(ok(".example.com"), ".example.com");
        assert_eq!(ok("www.example.*"), "www.example.*");
        assert_eq!(ok("例え.テスト"), "xn--r8jz45g.xn--zckzah");
        // UTS #46 non-transitional, as browsers: ß stays a letter of its own.
        assert_eq!(ok("straße.de"), "xn--strae-oqa.de");
        assert_eq!(ok("127.0.0.1"), "127.0.0.1");
        assert_eq!(ok("[::1]"), "[::1]");
        assert_eq!(ok("my_host.local"), "my_host.local");
        for bad in [
            "~^(www\\.)?example\\.com$",
            "~.*",
            "_",
            "$hostname",
            "",
            "a b",
            "a;b",
            "*",
            "a.*.b",
            "example.com.",
            "a..b",
            "[not-v6]",
            "x/y",
            "a\"b",
            "\u{7f}",
        ] {
            assert!(nginx_server_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(nginx_server_name("~x").unwrap_err().contains("regular expression"));
        assert!(
            nginx_server_name(&format!("{}.com", "a".repeat(64))).is_err(),
            "label > 63"
        );
    }

    #[test]
    fn url_prefixes() {
        for ok in ["/static/", "/a/b-c_d.e~f/", "/media/ü/", "/x:y@z/"] {
            assert_eq!(url_prefix_problem(ok), None, "{ok}");
        }
        for bad in [
            "static/", "/static", "/", "/../", "/a/../b/", "/./", "/a//b/", "/a b/", "/a%20b/", "/a?b/", "/a#b/",
            "/a=b/", "/$x/", "/a;b/", "/a\"b/", "/a\\b/", "/a(b)/", "/a{b}/",
        ] {
            assert!(url_prefix_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(url_prefix_problem("/a/../b/").unwrap().contains("`..`"));
    }

    #[test]
    fn uwsgi_values() {
        assert_eq!(uwsgi("100%"), "100%%");
        assert_eq!(uwsgi("/srv/a b;#=x"), "/srv/a b;#=x");
        assert_eq!(uwsgi_path("/srv/app"), "/srv/app");
        assert_eq!(uwsgi_path("/srv/50% "), "/srv/50%% /");
        assert_eq!(uwsgi_ini_arg("/srv/app/uwsgi/x.ini"), "/srv/app/uwsgi/x.ini");
        assert_eq!(uwsgi_ini_arg("/srv/a:b/uwsgi/x.ini"), "/srv/a:b/uwsgi/x.ini:uwsgi");
        assert_eq!(pcre_literal("/static/"), "/static/");
        assert_eq!(pcre_literal("/a.b+c/"), r"/a\.b\+c/");
        assert_eq!(pcre_literal("/médias~1/"), r"/médias\~1/");
    }
}
