//! containerd's filter syntax for [`crate::Snapshotter::walk`].
//!
//! A filter string is a comma-separated list of selectors that must **all** match (AND);
//! several filter strings match when **any** of them matches (OR). An empty list matches
//! everything. A selector is a field path, optionally followed by an operator and a value:
//!
//! | selector | matches when |
//! | --- | --- |
//! | `name==foo` | the field equals the value |
//! | `parent!=""` | the field differs from the value (here: the snapshot has a parent) |
//! | `labels.l` | the field is present (label `l` exists) |
//! | `labels."containerd.io/gc.root"==x` | quoted path segments may contain `.` and `/` |
//!
//! Fields: `name`, `parent`, `kind` (`active`, `view`, `committed`), `labels.<key>`.
//! Values are bare words (up to the next `,`) or double-quoted strings with `\"` and `\\`
//! escapes. The regex operator `~=` of containerd is rejected with `InvalidArgument`.

use crate::error::{Error, Result};
use crate::types::{Info, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Present,
    Equal,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    path: Vec<String>,
    op: Op,
    value: String,
}

/// A parsed set of filters: OR over filter strings, AND over the selectors of one string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    any_of: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses filter strings (OR-ed together). Errors with `InvalidArgument` on bad syntax.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut any_of = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                // An empty filter string matches everything, so the whole OR does.
                return Ok(Filter::default());
            }
            any_of.push(Parser::new(f).parse()?);
        }
        Ok(Filter { any_of })
    }

    /// Whether `info` passes the filter.
    pub fn matches(&self, info: &Info) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let field = field(info, &self.path);
        match self.op {
            Op::Present => field.is_some(),
            Op::Equal => field.as_deref() == Some(self.value.as_str()),
            Op::NotEqual => field.as_deref().unwrap_or("") != self.value,
        }
    }
}

fn field(info: &Info, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "kind" if rest.is_empty() => Some(
            match info.kind {
                Kind::Active => "active",
                Kind::View => "view",
                Kind::Committed => "committed",
            }
            .to_string(),
        ),
        "name" if rest.is_empty() => Some(info.name.clone()),
        "parent" if rest.is_empty() => Some(info.parent.clone()),
        "labels" if !rest.is_empty() => info.labels.get(&rest.join(".")).cloned(),
        _ => None,
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            chars: src.chars().collect(),
            pos: 0,
        }
    }

    fn err(&self, reason: &str) -> Error {
        Error::invalid(self.src, format!("filter: {reason} at offset {}", self.pos))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn parse(mut self) -> Result<Vec<Selector>> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            out.push(self.selector()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(out),
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.err("expected ','")),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector> {
        let mut path = vec![self.segment()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.segment()?);
        }
        self.skip_ws();
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), Some('=')) => Op::Equal,
            (Some('!'), Some('=')) => Op::NotEqual,
            (Some('~'), Some('=')) => return Err(self.err("operator ~= is not supported")),
            _ => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                    value: String::new(),
                });
            }
        };
        self.pos += 2;
        self.skip_ws();
        let value = self.value()?;
        Ok(Selector { path, op, value })
    }

    fn segment(&mut self) -> Result<String> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '/'))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err("expected a field name"));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn value(&mut self) -> Result<String> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ',') {
            self.pos += 1;
        }
        let v: String = self.chars[start..self.pos].iter().collect();
        let v = v.trim_end().to_string();
        if v.is_empty() {
            return Err(self.err("expected a value"));
        }
        Ok(v)
    }

    fn quoted(&mut self) -> Result<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated quoted string")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ ('"' | '\\')) => out.push(c),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        _ => return Err(self.err("bad escape in quoted string")),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Labels;
    use std::time::SystemTime;

    fn info(name: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Info {
        Info {
            kind,
            name: name.into(),
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
        }
    }

    fn m(filters: &[&str], i: &Info) -> bool {
        Filter::parse(filters).unwrap().matches(i)
    }

    #[test]
    fn selectors_match_like_containerd() {
        let a = info(
            "a-wl",
            "p",
            Kind::Active,
            &[("containerd.io/gc.root", "check-walk"), ("l", "2")],
        );
        assert!(m(&[], &a));
        assert!(m(&[""], &a));
        assert!(m(&[r#"labels."containerd.io/gc.root"==check-walk"#], &a));
        assert!(m(&["kind==active"], &a));
        assert!(!m(&["kind==view"], &a));
        assert!(m(&["name==p", "name==a-wl"], &a));
        assert!(m(&["name==a-wl,labels.l"], &a));
        assert!(!m(&["name==a-wl,labels.x"], &a));
        assert!(m(&["parent==p"], &a));
        assert!(m(&[r#"parent!="""#], &a));
        assert!(m(&["labels.l==2"], &a));
        assert!(!m(&["labels.l==3"], &a));
        let b = info("b", "", Kind::Committed, &[]);
        assert!(!m(&[r#"parent!="""#], &b));
        assert!(!m(&["labels.l"], &b));
        assert!(m(&["labels.l!=2"], &b));
        assert!(m(&[" kind == committed , name==b"], &b));
    }

    #[test]
    fn bad_syntax_is_invalid_argument() {
        for bad in [
            "==x",
            "name==",
            "name~=x",
            "labels.\"x",
            "name==a b\"",
            "a..b",
        ] {
            let r = Filter::parse(&[bad]);
            if bad == "name==a b\"" {
                // a bare value runs to the next comma, so this is a valid value
                assert!(r.is_ok());
                continue;
            }
            assert_eq!(
                r.unwrap_err().kind(),
                crate::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}
