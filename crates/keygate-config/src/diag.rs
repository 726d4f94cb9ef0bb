//! Diagnostics: where a problem is (file, line, column, dotted field path) and what it is.
//!
//! Owns the public [`Error`] and [`Diagnostic`] types, the internal [`Diag`] the loader collects
//! while it works (a position and a field, without the file name), and [`FieldPath`], the
//! `functions.f.events[0].http.method` paths every message names, and the "did you mean"
//! suggestions for misspelt keys and values.

use std::fmt;
use std::path::PathBuf;

/// A 1-based position in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Mark {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl Mark {
    /// The start of the file.
    pub(crate) const START: Mark = Mark { line: 1, col: 1 };
}

/// One problem found in a `serverless.yml`.
///
/// `Display` renders `file:line:column: field: message` (the `field: ` part is left out when the
/// problem is not about one field, e.g. a YAML syntax error). Messages never contain an API key
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The source name given to the loader (the path for [`crate::load`]).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path, e.g. `functions.candidateList.events[0].http.method`; empty when the
    /// problem is not about one field.
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a `serverless.yml` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file was read but is not a valid service: one or more diagnostics, in file order.
    /// `Display` renders one diagnostic per line.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl Error {
    /// The diagnostics of an [`Error::Invalid`]; empty for [`Error::Read`].
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid(d) => d,
        }
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A problem found while loading, before the file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    pub(crate) mark: Mark,
    pub(crate) field: String,
    pub(crate) message: String,
}

impl Diag {
    pub(crate) fn new(mark: Mark, field: &FieldPath, message: impl Into<String>) -> Self {
        Self { mark, field: field.to_string(), message: message.into() }
    }
}

/// Turns collected diagnostics into the public error: file name attached, sorted by position,
/// exact duplicates removed (a value referenced from several places is reported once).
pub(crate) fn into_error(file: &str, mut diags: Vec<Diag>) -> Error {
    diags.sort_by_key(|d| d.mark);
    diags.dedup();
    Error::Invalid(
        diags
            .into_iter()
            .map(|d| Diagnostic {
                file: file.to_owned(),
                line: d.mark.line,
                column: d.mark.col,
                field: d.field,
                message: d.message,
            })
            .collect(),
    )
}

/// The candidate closest to `key` when it is probably a misspelling of it: the same ignoring
/// case, or within two edits (one for short keys), transpositions counting as one.
pub(crate) fn suggest<'c>(
    key: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let key = key.to_ascii_lowercase();
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&key, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean `x`? ` when `key` looks like a misspelling of one of `known`, else nothing.
pub(crate) fn did_you_mean(key: &str, known: &[&str]) -> String {
    suggest(key, known.iter().copied())
        .map_or_else(String::new, |g| format!("did you mean `{g}`? "))
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A position in the document as a dotted path: keys joined by `.`, list items as `[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The document itself (renders as an empty string).
    pub(crate) fn root() -> Self {
        Self::default()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        Self(segs)
    }

    /// Appends a key in place.
    pub(crate) fn push_key(&mut self, key: &str) {
        self.0.push(Seg::Key(key.to_owned()));
    }

    /// Appends a list index in place.
    pub(crate) fn push_index(&mut self, i: usize) {
        self.0.push(Seg::Index(i));
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_render_dotted_with_indices() {
        let p = FieldPath::root().key("functions").key("f").key("events").index(0).key("http");
        assert_eq!(p.to_string(), "functions.f.events[0].http");
        assert_eq!(FieldPath::root().to_string(), "");
        assert_eq!(FieldPath::root().index(2).to_string(), "[2]");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["private", "path", "method", "cors"];
        assert_eq!(suggest("privat", keys), Some("private"));
        assert_eq!(suggest("Private", keys), Some("private"));
        assert_eq!(suggest("pirvate", keys), Some("private"));
        assert_eq!(suggest("mehtod", keys), Some("method"));
        assert_eq!(suggest("corz", keys), Some("cors"));
        assert_eq!(suggest("timeout", keys), None);
        assert_eq!(suggest("pa", keys), None);
    }

    #[test]
    fn diagnostics_render_with_and_without_field() {
        let mut d = Diagnostic {
            file: "serverless.yml".into(),
            line: 14,
            column: 17,
            field: "a.b".into(),
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "serverless.yml:14:17: a.b: bad");
        d.field.clear();
        assert_eq!(d.to_string(), "serverless.yml:14:17: bad");
    }
}
