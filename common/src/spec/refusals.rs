//! Refusals: values no config language deployctl writes can hold, and why.
//!
//! Owns: the predicates `spec::resolve` applies to paths, names and values (a control
//! character, uWSGI's `$(`, a quote in a unit's program, …) and the normalisation of
//! `server.names` as nginx compares them. Each states the rule and where it comes from.
//! Does not own: quoting or escaping what *can* be held — that is `deployctl::render::quote`,
//! which re-exports these so one language's rules read together. Pure functions of strings.

/// Why `s` cannot go into any config file: it holds a control character (U+0000–U+001F,
/// U+007F–U+009F).
///
/// systemd reads a unit line by line and has no escape in path settings (`WorkingDirectory=`,
/// `ListenStream=`); uWSGI's ini is line-based with no escape at all; nginx would need `\n`
/// inside quotes but passes paths to the kernel as written; and `systemd.exec(5)` refuses
/// control characters in `Environment=` values ("Invalid environment assignment").
pub fn control_char_problem(s: &str) -> Option<String> {
    s.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "contains a control character (U+{:04X}), which config files cannot hold",
            c as u32
        )
    })
}

/// Why `s` cannot be a uWSGI option value: it holds `$(`, `@(` or `%(`.
///
/// Rule (uWSGI 2.0 core/uwsgi.c `uwsgi_apply_config_pass`, run on every option value from
/// every source — ini, command line, `UWSGI_*` environment): `$(NAME)` is replaced by the
/// environment variable, `@(FILE)` by the file's contents (`@(exec://CMD)` runs a command),
/// `%(NAME)` by another option's value; the docs ("Configuring uWSGI") list no escape and the
/// source has none (`%%(` is first turned into `%(` by the magic-variable pass). Such a value
/// cannot be passed to uWSGI another way either, so the spec refuses it.
pub fn uwsgi_problem(s: &str) -> Option<String> {
    ["$(", "@(", "%("].iter().find(|seq| s.contains(*seq)).map(|seq| {
        format!(
            "contains `{seq}`, which uWSGI expands in every option value ({}) and cannot escape",
            match *seq {
                "$(" => "`$(NAME)` is an environment variable",
                "@(" => "`@(FILE)` reads a file or runs `exec://` commands",
                _ => "`%(NAME)` is another option's value",
            }
        )
    })
}

/// Why `path` cannot be the program of a systemd unit (the first word of `ExecStart=`): it
/// holds `\`, `"` or `'`.
///
/// Rule (systemd 252 `config_parse_exec`, which checks the unquoted program with
/// `string_is_safe()`): "Executable name contains special characters" — quoting or escaping
/// does not help, the unit is not loaded. Arguments may hold anything (`render::quote::systemd_exec_word`).
pub fn systemd_executable_problem(path: &str) -> Option<String> {
    path.contains(['\\', '"', '\'']).then(|| {
        "contains a quote or a backslash, which systemd refuses in the program a unit starts (\"Executable name \
         contains special characters\")"
            .to_string()
    })
}

/// Why `dir` cannot be the app's directory under Gunicorn: it ends in whitespace.
///
/// Rule (Gunicorn 27 `gunicorn/config.py`): every string setting goes through `validate_string`,
/// which returns `val.strip()`, and the default of `chdir` is the current directory, validated
/// when the configuration is created — so Gunicorn started in (or told to change to) a
/// directory whose name ends in whitespace looks for another one and exits ("can't chdir").
/// The units start the backend in the app's directory, so such a directory is refused.
pub fn gunicorn_problem(dir: &str) -> Option<String> {
    dir.ends_with(char::is_whitespace).then(|| {
        "ends with whitespace, which Gunicorn strips from its working directory (it then cannot start)".to_string()
    })
}

/// A host name as `server_name` needs it: lower case, an internationalised name in punycode,
/// or why it cannot be one.
///
/// Rule (nginx docs "Server names"; `ngx_http_server_names`): nginx compares the Host header,
/// lower-cased, with each name; browsers send IDNs as punycode (UTS #46 non-transitional,
/// as the WHATWG URL standard), so `bücher.example` must be written `xn--bcher-kva.example`.
/// Accepted: host names of letters, digits, `-` and `_` labels (IPv4 addresses included), with
/// a wildcard `*.` or `.` in front or `.*` at the end, and `[IPv6]` literals. Refused: names
/// starting with `~` — a regular expression that can match any host and so defeat the default
/// server that refuses unknown hosts; `$` (nginx reads `$hostname` as a variable); `_`, the
/// name of that default server; anything else that is not a host name.
pub fn nginx_server_name(name: &str) -> Result<String, String> {
    if name.starts_with('~') {
        return Err(format!(
            "{name:?} is a regular expression: not supported, since a pattern can match every host and \
             defeat the default server that refuses unknown ones"
        ));
    }
    if name == "_" {
        return Err("\"_\" is the name of the default server that refuses unknown hosts".into());
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(name.to_ascii_lowercase()),
            Err(_) => Err(format!("{name:?} is not an [IPv6] address")),
        };
    }
    let not_a_host = || format!("{name:?} is not a host name");
    let (prefix, core, suffix) = if let Some(rest) = name.strip_prefix("*.") {
        ("*.", rest, "")
    } else if let Some(rest) = name.strip_prefix('.') {
        (".", rest, "")
    } else if let Some(rest) = name.strip_suffix(".*") {
        ("", rest, ".*")
    } else {
        ("", name, "")
    };
    if core.ends_with('.') && !core.is_empty() {
        return Err(format!("{name:?} ends with `.`: write it without"));
    }
    if core.is_empty() || core.contains(['*', '$']) || core.contains(|c: char| c.is_whitespace()) {
        return Err(not_a_host());
    }
    let ascii = idna::domain_to_ascii(core).map_err(|_| not_a_host())?;
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !ascii.split('.').all(label_ok) {
        return Err(not_a_host());
    }
    let full = format!("{prefix}{ascii}{suffix}");
    if full.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    Ok(full)
}

/// Why `url` cannot be a `[[static]]` URL prefix (an nginx `location`, a uWSGI `static-map`).
///
/// Rule (nginx docs `location`: "matching is performed against a normalized URI, after decoding
/// the text encoded in the "%XX" form, resolving references to relative path components "." and
/// "..", and possible compression of two or more adjacent slashes"): a prefix holding `%XX`,
/// `.`/`..` segments or `//` never matches as written, and `..` beside an `alias` is the shape of
/// a path traversal. `?` and `#` are not part of a path. Characters are limited to those that
/// need no quoting in nginx (no whitespace, quotes, `;{}$\`) nor in uWSGI (`=` separates
/// `static-map`'s URL from its directory; `(` follows `$`, `@`, `%` in uWSGI's expansions).
pub fn url_prefix_problem(url: &str) -> Option<String> {
    if !url.starts_with('/') || !url.ends_with('/') || url == "/" {
        return Some(format!("{url:?} must start and end with `/` and not be `/` itself"));
    }
    let inner = &url[1..url.len() - 1];
    for seg in inner.split('/') {
        if seg.is_empty() {
            return Some(format!("{url:?} has an empty segment (`//`)"));
        }
        if seg == "." || seg == ".." {
            return Some(format!("{url:?} has a `{seg}` segment"));
        }
    }
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '/' | '-' | '.' | '_' | '~' | '!' | '*' | '+' | ',' | ':' | '@' | '&')
            || (!c.is_ascii() && c.is_alphanumeric())
    };
    url.chars().find(|c| !allowed(*c)).map(|c| {
        format!(
            "{url:?} contains {c:?}: URL prefixes take letters, digits and `-._~!*+,:@&` \
             (write other characters unencoded only if they are letters)"
        )
    })
}
