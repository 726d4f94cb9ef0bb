//! The walker every part of the loader shares: [`Ctx`] holds the variable resolver, the
//! problems and notes found so far and the routes declared so far, and reads typed values
//! (strings, booleans, integers, maps, lists) out of the spanned tree, reporting a mismatch where
//! the value is. [`Section`] describes which keys a part of the file takes.
//!
//! `build.rs` (top level, `provider`, `functions`), `http.rs`, `keys.rs` and `plans.rs` add their
//! own `impl Ctx` blocks on top of this module; it imports none of them.

use std::collections::{HashMap, HashSet};

use keygate_types::HttpMethod;

use crate::diag::{Diag, FieldPath, Mark, suggest};
use crate::vars::Resolver;
use crate::yaml::{Entry, Node, Value, int_value};

/// A part of the file whose keys are checked: what a key there is called in messages, the keys
/// keygate reads and the keys Serverless defines that keygate ignores (a note). Any other key is
/// an error with a "did you mean" (a note with `--allow-unknown`).
pub(crate) struct Section {
    /// e.g. "key in an http event".
    pub(crate) what: &'static str,
    pub(crate) used: &'static [&'static str],
    pub(crate) ignored: &'static [&'static str],
}

/// A route already declared (keyed by shape and method), to find duplicates.
pub(crate) struct Route {
    pub(crate) field: String,
    pub(crate) line: usize,
}

/// Walks the document, collecting problems and notes.
pub(crate) struct Ctx<'a> {
    pub(crate) r: Resolver<'a>,
    notes: Vec<String>,
    /// Keys Serverless defines that keygate ignores, in file order (and as a set, to list each
    /// once).
    ignored: Vec<String>,
    ignored_seen: HashSet<String>,
    /// Unknown keys, when `allow_unknown` makes them notes.
    unknown: Vec<String>,
    unknown_seen: HashSet<String>,
    /// `--allow-unknown` or `configValidationMode: warn|off`: unknown keys are notes, not errors.
    pub(crate) allow_unknown: bool,
    pub(crate) other_events: Vec<String>,
    /// Routes declared so far by (shape, method), to find duplicates.
    pub(crate) routes: HashMap<(String, HttpMethod), Route>,
    /// How many `- http:` events the file declares (read or not), to tell a service that
    /// serves nothing.
    pub(crate) http_declared: usize,
    /// The `- stream:` events of the function being read (taken by `build`).
    pub(crate) pending_streams: Vec<keygate_types::StreamEvent>,
    /// Stream events' `Fn::GetAtt` tables, checked once `resources` is read.
    pub(crate) stream_refs: Vec<crate::streams::StreamRef>,
    /// Tables named by `Ref`/`Fn::GetAtt` in environment values, resolved at the end.
    pub(crate) table_refs: Vec<crate::streams::TableRef>,
    /// Authorizers' functions, checked once `functions` is read.
    pub(crate) authorizer_refs: Vec<crate::authorizer::AuthorizerRef>,
}

/// Keys that lock or unlock routes: a key that looks like one of them misspelt is an error even
/// when unknown keys are allowed.
const AUTH_KEYS: &[&str] = &[
    "private",
    "authorizer",
    "apiKeys",
    "usagePlan",
    "apiKeySourceType",
    "resourcePolicy",
    "endpointType",
];

impl<'a> Ctx<'a> {
    pub(crate) fn new(r: Resolver<'a>, allow_unknown: bool) -> Self {
        Self {
            r,
            notes: Vec::new(),
            ignored: Vec::new(),
            ignored_seen: HashSet::new(),
            unknown: Vec::new(),
            unknown_seen: HashSet::new(),
            allow_unknown,
            other_events: Vec::new(),
            routes: HashMap::new(),
            http_declared: 0,
            pending_streams: Vec::new(),
            stream_refs: Vec::new(),
            table_refs: Vec::new(),
            authorizer_refs: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, mark: Mark, path: &FieldPath, message: impl Into<String>) {
        self.r.error(mark, path, message);
    }

    pub(crate) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// A key Serverless knows and keygate does not use.
    pub(crate) fn ignore(&mut self, path: &FieldPath) {
        let p = path.to_string();
        if self.ignored_seen.insert(p.clone()) {
            self.ignored.push(p);
        }
    }

    /// A key of `section` that keygate does not read: a note when Serverless defines it, else
    /// [`Ctx::unknown`].
    pub(crate) fn other_key(&mut self, key: &str, mark: Mark, path: &FieldPath, section: &Section) {
        if section.ignored.contains(&key) {
            self.ignore(path);
        } else {
            self.unknown(key, mark, path, section);
        }
    }

    /// A key neither Serverless nor keygate knows, probably a typo: an error with a "did you
    /// mean" (a misspelt `private` must not deploy a public route), or a note with
    /// `--allow-unknown`, unless it looks like a misspelt auth setting ([`AUTH_KEYS`]).
    pub(crate) fn unknown(&mut self, key: &str, mark: Mark, path: &FieldPath, section: &Section) {
        let guess = suggest(key, section.used.iter().chain(section.ignored).copied());
        // A key that looks like a misspelt auth setting stays an error even with
        // `--allow-unknown`: `privte: true` must not deploy a public route.
        let auth_typo = guess.is_some_and(|g| AUTH_KEYS.contains(&g));
        if self.allow_unknown && !auth_typo {
            let p = match guess {
                Some(g) => format!("{path} (did you mean `{g}`?)"),
                None => path.to_string(),
            };
            if self.unknown_seen.insert(p.clone()) {
                self.unknown.push(p);
            }
            return;
        }
        let message = match guess {
            Some(g) if auth_typo && self.allow_unknown => format!(
                "unknown {}; did you mean `{g}`? (a misspelt auth setting stays an error when \
                 unknown keys are allowed: ignoring it could serve a route open)",
                section.what
            ),
            Some(g) => format!("unknown {}; did you mean `{g}`?", section.what),
            None => format!(
                "unknown {}; keygate reads {} here (and ignores the other keys Serverless \
                 defines): check the spelling, or pass --allow-unknown to ignore it",
                section.what,
                section.used.join(", ")
            ),
        };
        self.error(mark, path, message);
    }

    pub(crate) fn expand(&mut self, node: &Node, path: &FieldPath) -> Node {
        self.r.expand(node, path)
    }

    pub(crate) fn mismatch(&mut self, node: &Node, path: &FieldPath, what: &str) {
        let found = node.describe();
        self.error(node.mark, path, format!("expected {what}, found {found}"));
    }

    /// A string value (strictly a string).
    pub(crate) fn string(&mut self, node: &Node, path: &FieldPath, what: &str) -> Option<String> {
        let v = self.expand(node, path);
        match v.value {
            Value::Str(s) if v.tag.is_none() => Some(s),
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// A string, number or boolean, as text.
    pub(crate) fn text(&mut self, node: &Node, path: &FieldPath, what: &str) -> Option<String> {
        let v = self.expand(node, path);
        if let Value::Invalid = v.value {
            return None;
        }
        match v.scalar_text() {
            Some(t) if v.tag.is_none() => Some(t),
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// `true` or `false`, as YAML writes booleans (unquoted). A variable may also give the
    /// strings `"true"` / `"false"` (environment variables are text); nothing else is taken, so
    /// `private: yes`, `private: "true"` or `private: 1` are errors, not a guess.
    pub(crate) fn boolean(&mut self, node: &Node, path: &FieldPath) -> Option<bool> {
        let from_variable = matches!(node.value, Value::Template(_));
        let v = self.expand(node, path);
        match &v.value {
            Value::Bool(b) if v.tag.is_none() => Some(*b),
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("true") => Some(true),
            Value::Str(s) if from_variable && s.eq_ignore_ascii_case("false") => Some(false),
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, "true or false (a YAML boolean, unquoted)");
                None
            }
        }
    }

    /// A whole number (also as a numeric string, as variables give them), within `range`.
    pub(crate) fn integer(
        &mut self,
        node: &Node,
        path: &FieldPath,
        what: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.expand(node, path);
        let n = match &v.value {
            Value::Num(n) => int_value(n),
            Value::Str(s) => int_value(s.trim()),
            Value::Invalid => return None,
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// The entries of a map; nothing (`key:` with no value) is an empty map.
    pub(crate) fn map(&mut self, node: &Node, path: &FieldPath, what: &str) -> Option<Vec<Entry>> {
        let v = self.expand(node, path);
        match v.value {
            Value::Map(entries) if v.tag.is_none() => Some(entries),
            Value::Null => Some(Vec::new()),
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// The items of a list; nothing is an empty list.
    pub(crate) fn list(&mut self, node: &Node, path: &FieldPath, what: &str) -> Option<Vec<Node>> {
        let v = self.expand(node, path);
        match v.value {
            Value::Seq(items) if v.tag.is_none() => Some(items),
            Value::Null => Some(Vec::new()),
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// A list of strings (or one comma-separated string when `comma` is set).
    pub(crate) fn strings(
        &mut self,
        node: &Node,
        path: &FieldPath,
        what: &str,
        comma: bool,
    ) -> Option<Vec<String>> {
        let v = self.expand(node, path);
        match &v.value {
            Value::Str(s) if comma => Some(
                s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            ),
            Value::Seq(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    out.push(self.string(item, &path.index(i), "a string")?);
                }
                Some(out)
            }
            Value::Invalid => None,
            _ => {
                self.mismatch(&v, path, what);
                None
            }
        }
    }

    /// Ends the walk: the problems found and the notes, with the summary notes (ignored
    /// events, ignored and unknown keys) appended.
    pub(crate) fn into_findings(mut self) -> (Vec<Diag>, Vec<String>) {
        if !self.other_events.is_empty() {
            let events = self.other_events.join(", ");
            self.note(format!("ignored events (keygate serves only http events): {events}"));
        }
        if !self.ignored.is_empty() {
            let keys = self.ignored.join(", ");
            self.note(format!("ignored (not used by keygate): {keys}"));
        }
        if !self.unknown.is_empty() {
            let keys = self.unknown.join(", ");
            self.note(format!("not recognised, so ignored (check the spelling): {keys}"));
        }
        (self.r.diags, self.notes)
    }
}
