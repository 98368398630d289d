//! containerd's filter language (`github.com/containerd/containerd/filters`) for Walk.
//!
//! A filter is selectors joined by `,` (all must match); a request's several filters are
//! alternatives (any may match). A selector is a field path (`name`, `parent`, `kind`,
//! `labels."a.b/c"`), optionally followed by `==`, `!=` or `~=` (a regular expression) and a
//! value, bare or quoted (`"…"` with Go escapes, or `/…/` for regular expressions). A field path
//! alone matches when the field is present.

use regex::Regex;

/// How a selector compares.
#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

/// One `fieldpath op value` term.
#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed request: any of its conjunctions may match.
#[derive(Debug, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

/// What a filter asks of a snapshot: the value at a field path, if present.
pub trait Fields {
    /// The value at `path`, `None` when the field is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

impl Filter {
    /// Parses every filter string of a Walk request; an empty list matches everything.
    pub fn parse_all(filters: &[String]) -> Result<Filter, String> {
        let mut any = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                // containerd's ParseAll treats an empty string as "match all".
                return Ok(Filter::default());
            }
            any.push(parse(f)?);
        }
        Ok(Filter { any })
    }

    /// Whether `item` passes the filter.
    pub fn matches(&self, item: &impl Fields) -> bool {
        if self.any.is_empty() {
            return true;
        }
        self.any.iter().any(|all| {
            all.iter().all(|s| {
                let v = item.field(&s.path);
                match &s.op {
                    Op::Present => v.is_some(),
                    Op::Equal(want) => v.as_deref() == Some(want.as_str()),
                    // As in Go: an absent field compares as "" for != and ~=.
                    Op::NotEqual(want) => v.as_deref().unwrap_or("") != want,
                    Op::Matches(re) => re.is_match(v.as_deref().unwrap_or("")),
                }
            })
        })
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn err(&self, what: &str) -> String {
        format!("invalid filter {:?} at byte {}: {what}", self.src, self.i)
    }
    /// A quoted string: `"…"` with Go escapes or `/…/` (only `\/` is an escape there).
    fn quoted(&mut self) -> Result<String, String> {
        let q = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == q {
                return String::from_utf8(out).map_err(|_| self.err("the quoted string is not UTF-8"));
            }
            if c == b'\\' {
                let Some(n) = self.peek() else { break };
                self.i += 1;
                if q == b'/' {
                    if n != b'/' {
                        out.push(b'\\');
                    }
                    out.push(n);
                    continue;
                }
                out.push(match n {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'\\' => b'\\',
                    b'"' => b'"',
                    b'\'' => b'\'',
                    other => return Err(self.err(&format!("unknown escape \\{}", other as char))),
                });
                continue;
            }
            out.push(c);
        }
        Err(self.err("unterminated quoted string"))
    }
    fn field(&mut self) -> Result<String, String> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') | Some(b'/') => self.quoted(),
            Some(c) if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
                    self.i += 1;
                }
                Ok(self.src[start..self.i].to_owned())
            }
            _ => Err(self.err("expected a field name")),
        }
    }
    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') | Some(b'/') => self.quoted(),
            Some(_) => {
                let start = self.i;
                while self.peek().is_some_and(|c| c != b',' && !c.is_ascii_whitespace()) {
                    self.i += 1;
                }
                Ok(self.src[start..self.i].to_owned())
            }
            None => Err(self.err("expected a value")),
        }
    }
}

fn parse(src: &str) -> Result<Vec<Selector>, String> {
    let mut lx = Lexer { s: src.as_bytes(), i: 0, src };
    let mut all = Vec::new();
    loop {
        let mut path = vec![lx.field()?];
        lx.skip_ws();
        while lx.peek() == Some(b'.') {
            lx.i += 1;
            path.push(lx.field()?);
            lx.skip_ws();
        }
        let rest = &lx.s[lx.i..];
        let op = if rest.starts_with(b"==") {
            lx.i += 2;
            Op::Equal(lx.value()?)
        } else if rest.starts_with(b"!=") {
            lx.i += 2;
            Op::NotEqual(lx.value()?)
        } else if rest.starts_with(b"~=") {
            lx.i += 2;
            let v = lx.value()?;
            Op::Matches(Regex::new(&v).map_err(|e| lx.err(&format!("bad regular expression {v:?}: {e}")))?)
        } else {
            Op::Present
        };
        all.push(Selector { path, op });
        lx.skip_ws();
        match lx.peek() {
            None => return Ok(all),
            Some(b',') => lx.i += 1,
            Some(_) => return Err(lx.err("expected ',' or the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct S(BTreeMap<&'static str, &'static str>, BTreeMap<&'static str, &'static str>);
    impl Fields for S {
        fn field(&self, path: &[String]) -> Option<String> {
            match path {
                [f] => self.0.get(f.as_str()).map(|v| v.to_string()),
                [l, k] if l == "labels" => self.1.get(k.as_str()).map(|v| v.to_string()),
                _ => None,
            }
        }
    }

    fn s() -> S {
        S(
            [("name", "ns/1/a b"), ("kind", "committed"), ("parent", "")].into_iter().collect(),
            [("containerd.io/gc.root", "x"), ("a.b", "c")].into_iter().collect(),
        )
    }

    fn m(fs: &[&str]) -> bool {
        let fs: Vec<String> = fs.iter().map(|s| s.to_string()).collect();
        Filter::parse_all(&fs).unwrap().matches(&s())
    }

    #[test]
    fn containerd_filters_match_as_in_go() {
        assert!(m(&[]));
        assert!(m(&["kind==committed"]));
        assert!(!m(&["kind==active"]));
        assert!(m(&["kind==active", "kind==committed"]));
        assert!(m(&[r#"labels."containerd.io/gc.root""#]));
        assert!(m(&[r#"labels."a.b"==c,kind==committed"#]));
        assert!(!m(&[r#"labels."a.b"==c,kind!=committed"#]));
        assert!(m(&[r#"name=="ns/1/a b""#]));
        assert!(m(&["name~=/a b$/"]));
        assert!(m(&[r#"name~="^ns/""#]));
        assert!(!m(&["labels.missing"]));
        assert!(!m(&[r#"parent!="""#]));
        assert!(m(&[r#"labels.missing!=x"#]));
        assert!(Filter::parse_all(&["kind==".into()]).is_err());
        assert!(Filter::parse_all(&["kind==a b".into()]).is_err());
    }
}
