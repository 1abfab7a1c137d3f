//! Minimal parsers for what deployctl renders: nginx and Apache httpd configuration, INI
//! (uWSGI), systemd units.

/// One nginx or Apache directive; `block` holds the children of `name args { … }` (nginx) or
/// `<Name args> … </Name>` (Apache).
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a Directive> + use<'a, 'n> {
        self.block.iter().flatten().filter(move |d| d.name == name)
    }

    pub fn one(&self, name: &str) -> &Directive {
        let v: Vec<_> = self.all(name).collect();
        assert_eq!(v.len(), 1, "expected one `{name}` in `{} {:?}`", self.name, self.args);
        v[0]
    }

    pub fn arg(&self, name: &str) -> String {
        self.one(name).args.join(" ")
    }

    /// `add_header` name → value, in this block only.
    pub fn headers(&self) -> std::collections::BTreeMap<String, String> {
        self.all("add_header")
            .map(|d| (d.args[0].clone(), d.args[1].clone()))
            .collect()
    }
}

fn tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '{' | '}' | ';' => {
                out.push(c.to_string());
                chars.next();
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                while let Some(x) = chars.next() {
                    if x == '\\' {
                        if let Some(n) = chars.next() {
                            s.push(n);
                        }
                    } else if x == c {
                        break;
                    } else {
                        s.push(x);
                    }
                }
                out.push(s);
            }
            _ => {
                let mut s = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || matches!(x, '{' | '}' | ';') {
                        break;
                    }
                    s.push(x);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    out
}

/// Parses an nginx file into a root directive named `main`.
pub fn nginx(src: &str) -> Directive {
    fn block(t: &[String], i: &mut usize) -> Vec<Directive> {
        let mut out = Vec::new();
        let mut words = Vec::new();
        while *i < t.len() {
            let tok = &t[*i];
            *i += 1;
            match tok.as_str() {
                ";" => {
                    let mut w: Vec<String> = std::mem::take(&mut words);
                    let name = w.remove(0);
                    out.push(Directive {
                        name,
                        args: w,
                        block: None,
                    });
                }
                "{" => {
                    let mut w: Vec<String> = std::mem::take(&mut words);
                    let name = w.remove(0);
                    let children = block(t, i);
                    out.push(Directive {
                        name,
                        args: w,
                        block: Some(children),
                    });
                }
                "}" => return out,
                _ => words.push(tok.clone()),
            }
        }
        assert!(words.is_empty(), "unterminated directive {words:?}");
        out
    }
    let t = tokens(src);
    let mut i = 0;
    Directive {
        name: "main".into(),
        args: vec![],
        block: Some(block(&t, &mut i)),
    }
}

/// The words of one Apache line, as httpd's `ap_getword_conf` reads them: whitespace splits,
/// a word in double (or single) quotes may hold whitespace, and inside it a backslash before
/// the quote or another backslash makes that character literal; every other backslash stays.
fn apache_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            while let Some(x) = chars.next() {
                match x {
                    '\\' if chars.peek().is_some_and(|&n| n == c || n == '\\') => {
                        w.push(chars.next().unwrap_or(x));
                    }
                    x if x == c => break,
                    x => w.push(x),
                }
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                w.push(x);
                chars.next();
            }
        }
        out.push(w);
    }
    out
}

/// Parses an Apache httpd file into a root directive named `main`; directive and section
/// names keep their case (`VirtualHost`, `Location`).
pub fn apache(src: &str) -> Directive {
    let mut stack: Vec<Directive> = vec![Directive {
        name: "main".into(),
        args: vec![],
        block: Some(vec![]),
    }];
    for raw in src.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("</") {
            let name = name.trim_end_matches('>');
            let done = stack.pop().expect("a section to close");
            assert_eq!(done.name, name, "</{name}> closes <{}>", done.name);
            stack
                .last_mut()
                .expect("an enclosing block")
                .block
                .get_or_insert_with(Vec::new)
                .push(done);
        } else if let Some(open) = line.strip_prefix('<') {
            let mut w = apache_words(open.strip_suffix('>').expect("a section ends with >"));
            let name = w.remove(0);
            stack.push(Directive {
                name,
                args: w,
                block: Some(vec![]),
            });
        } else {
            let mut w = apache_words(line);
            let name = w.remove(0);
            stack
                .last_mut()
                .expect("a block")
                .block
                .get_or_insert_with(Vec::new)
                .push(Directive {
                    name,
                    args: w,
                    block: None,
                });
        }
    }
    assert_eq!(
        stack.len(),
        1,
        "unclosed section <{}>",
        stack.last().map_or("", |d| &d.name)
    );
    stack.remove(0)
}

/// INI-style files (uWSGI `.ini`, systemd units): section → ordered (key, value) pairs.
pub fn ini(src: &str, comment: &[char]) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in src.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with(comment) {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((s.to_string(), Vec::new()));
        } else if let Some((k, v)) = l.split_once('=') {
            let section = out.last_mut().expect("key before any section");
            section.1.push((k.trim().to_string(), v.trim().to_string()));
        } else {
            panic!("not an INI line: {line:?}");
        }
    }
    out
}

/// All values of `key` in `section`.
pub fn values<'a>(parsed: &'a [(String, Vec<(String, String)>)], section: &str, key: &str) -> Vec<&'a str> {
    parsed
        .iter()
        .filter(|(s, _)| s == section)
        .flat_map(|(_, kv)| kv.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()))
        .collect()
}

/// The single value of `key` in `section`.
#[track_caller]
pub fn value<'a>(parsed: &'a [(String, Vec<(String, String)>)], section: &str, key: &str) -> &'a str {
    let v = values(parsed, section, key);
    assert_eq!(v.len(), 1, "expected one {key} in [{section}], found {v:?}");
    v[0]
}
