//! containerd's filter syntax, as used by `Walk`, `ListStatuses` and the image list.
//!
//! A filter string is a `,`-separated list of selectors that must **all** match; several filter
//! strings match when **any** of them does; no filter (or an empty string) matches everything.
//! A selector is a field path, optionally followed by an operator and a value:
//!
//! | form | meaning |
//! |---|---|
//! | `labels."k"` or `labels.k` | the field exists (and is non-empty) |
//! | `labels."k"==v` | equal |
//! | `labels."k"!=v` | not equal (a missing field is not equal) |
//! | `name~=^docker\.io/` | matches the regular expression |
//!
//! Field-path components are separated by `.` and may be quoted with `"` (so a label key may
//! contain dots); an unquoted `labels.a.b` names the label `a.b`, as in containerd. Values may
//! be bare (up to the next `,`, trimmed), `"quoted"` (with `\"` and `\\` escapes) or, for
//! `~=`, `/slashed/`.

use regex::Regex;

use crate::error::{Error, Result};

/// A parsed set of filters (an OR of ANDs).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    alternatives: Vec<Vec<Selector>>,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Exists,
    Eq(String),
    Ne(String),
    Matches(Regex),
}

impl Filter {
    /// Parses filter strings; an empty slice (or only empty strings) matches everything.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] naming the string and the problem.
    pub fn parse(filters: &[&str]) -> Result<Self> {
        let mut alternatives = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                // An empty alternative matches everything.
                return Ok(Filter::default());
            }
            alternatives.push(parse_one(f).map_err(|reason| Error::InvalidFilter {
                filter: (*f).to_owned(),
                reason,
            })?);
        }
        Ok(Filter { alternatives })
    }

    /// Whether the filter matches nothing out (no alternatives).
    pub fn is_empty(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// Whether an object matches. `field` resolves a field path (`["labels", "k"]`) to the
    /// object's value, or `None` when the object has no such field.
    pub fn matches(&self, field: &dyn Fn(&[String]) -> Option<String>) -> bool {
        if self.alternatives.is_empty() {
            return true;
        }
        self.alternatives.iter().any(|all| {
            all.iter().all(|sel| {
                let v = field(&sel.path);
                match &sel.op {
                    Op::Exists => v.is_some_and(|v| !v.is_empty()),
                    Op::Eq(want) => v.as_deref() == Some(want.as_str()),
                    Op::Ne(want) => v.as_deref() != Some(want.as_str()),
                    Op::Matches(re) => v.is_some_and(|v| re.is_match(&v)),
                }
            })
        })
    }
}

/// Resolves `labels.<key>` (the rest of the path joined by `.`) in a label map.
pub fn label_field(
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    match path {
        [first, rest @ ..] if first == "labels" && !rest.is_empty() => {
            labels.get(&rest.join(".")).cloned()
        }
        _ => None,
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }
    fn quoted(&mut self, delim: u8) -> std::result::Result<String, String> {
        // The opening delimiter was consumed by the caller.
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(format!("unterminated {} quote", delim as char)),
                Some(c) if c == delim => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if c == delim || c == b'\\' => {
                            // Regexes keep their backslashes, except before the delimiter.
                            if delim == b'/' && c == b'\\' {
                                out.push(b'\\');
                            }
                            out.push(c);
                            self.pos += 1;
                        }
                        Some(c) if delim == b'/' => {
                            out.push(b'\\');
                            out.push(c);
                            self.pos += 1;
                        }
                        Some(b'n') => {
                            out.push(b'\n');
                            self.pos += 1;
                        }
                        Some(b't') => {
                            out.push(b'\t');
                            self.pos += 1;
                        }
                        _ => return Err("bad escape in quoted string".into()),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "quoted string is not UTF-8".into())
    }
    fn identifier(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'/' | b':'))
        {
            self.pos += 1;
        }
        self.text[start..self.pos].to_owned()
    }
}

fn parse_one(f: &str) -> std::result::Result<Vec<Selector>, String> {
    let mut c = Cursor {
        s: f.as_bytes(),
        text: f,
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        let mut path = Vec::new();
        loop {
            let comp = if c.eat("\"") {
                c.quoted(b'"')?
            } else {
                let id = c.identifier();
                if id.is_empty() {
                    return Err(format!("expected a field name at byte {}", c.pos));
                }
                id
            };
            path.push(comp);
            if !c.eat(".") {
                break;
            }
        }
        c.skip_ws();
        let op = if c.eat("==") {
            Op::Eq(value(&mut c)?)
        } else if c.eat("!=") {
            Op::Ne(value(&mut c)?)
        } else if c.eat("~=") {
            let v = value(&mut c)?;
            Op::Matches(Regex::new(&v).map_err(|e| format!("bad regular expression: {e}"))?)
        } else {
            Op::Exists
        };
        out.push(Selector { path, op });
        c.skip_ws();
        match c.peek() {
            None => return Ok(out),
            Some(b',') => c.pos += 1,
            Some(ch) => {
                return Err(format!("unexpected {:?} at byte {}", ch as char, c.pos));
            }
        }
    }
}

fn value(c: &mut Cursor<'_>) -> std::result::Result<String, String> {
    c.skip_ws();
    if c.eat("\"") {
        return c.quoted(b'"');
    }
    if c.eat("/") {
        return c.quoted(b'/');
    }
    let start = c.pos;
    while c.peek().is_some_and(|ch| ch != b',') {
        c.pos += 1;
    }
    let v = c.text[start..c.pos].trim();
    if v.is_empty() {
        return Err(format!("missing value at byte {start}"));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn obj(labels: &[(&str, &str)], name: &str) -> impl Fn(&[String]) -> Option<String> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let name = name.to_owned();
        move |p: &[String]| {
            if p.len() == 1 && p[0] == "name" {
                return Some(name.clone());
            }
            label_field(&labels, p)
        }
    }

    #[test]
    fn equality_and_and_or() {
        let o = obj(&[("a", "1"), ("b", "2")], "x");
        let m = |fs: &[&str]| Filter::parse(fs).unwrap().matches(&o);
        assert!(m(&[]));
        assert!(m(&[""]));
        assert!(m(&["labels.a==1"]));
        assert!(m(&["labels.\"a\"==1,labels.b==2"]));
        assert!(!m(&["labels.a==1,labels.b==3"]));
        assert!(m(&["labels.a==9", "labels.b==2"]));
        assert!(m(&["labels.a!=2"]));
        assert!(m(&["labels.zz!=2"]));
        assert!(!m(&["labels.a!=1"]));
        assert!(m(&["labels.a"]));
        assert!(!m(&["labels.c"]));
        assert!(m(&["name==x"]));
        assert!(m(&["name~=^x$"]));
        assert!(m(&["name~=/^x$/"]));
        assert!(!m(&["name~=y"]));
    }

    #[test]
    fn dotted_and_quoted_keys() {
        let o = obj(&[("containerd.io/gc.root", "t"), ("k", "v w")], "n");
        let m = |fs: &[&str]| Filter::parse(fs).unwrap().matches(&o);
        assert!(m(&["labels.\"containerd.io/gc.root\""]));
        assert!(m(&["labels.containerd.io/gc.root==t"]));
        assert!(m(&["labels.k==\"v w\""]));
        assert!(m(&[" labels.k == v w "]));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["==x", "labels.a==", "labels.\"a", "a~=(", "a b"] {
            let err = Filter::parse(&[bad]).unwrap_err();
            assert_eq!(
                err.kind(),
                crate::error::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}
