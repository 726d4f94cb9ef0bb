//! The messages keygate's HTTP/1.1 code hands around: a [`Request`] as the server read it and a
//! [`Response`] to write, with their header fields as flat lists.
//!
//! Why not `http::Request` / `http::Response`: their `HeaderMap` hashes every name into an index
//! table, validates every name and value once more after `httparse` already did, and takes two
//! allocations to build and a walk to drop. keygate's listeners look up two or three names per
//! request in heads of a handful of fields, where a linear scan over the parsed head is cheaper
//! than building the map (docs/benchmarks.md, change 23). A request's fields stay where
//! `httparse` found them, as spans into the head's bytes ([`Fields`]); a response's are a list of
//! byte strings, static or sharing the buffer they came from ([`Headers`]), written out as they
//! are, in order and with the case they were given.

use std::fmt;

use bytes::Bytes;
use http::{Method, StatusCode, Version};

use crate::wire::{Span, Spans};

/// The header fields of a parsed head, in order: spans into the head's bytes, checked by
/// `httparse` (names are tokens, values hold no line breaks). Lookups ignore ASCII case.
#[derive(Clone, Default)]
pub struct Fields {
    head: Bytes,
    spans: Spans,
}

impl Fields {
    /// The fields at `spans` (as [`crate::wire::spans`] recorded them) in `head`.
    pub fn new(head: Bytes, spans: Spans) -> Self {
        Self { head, spans }
    }

    /// How many fields there are (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn at(&self, span: Span) -> &[u8] {
        crate::wire::at(&self.head, span)
    }

    /// Every field, in order, as (name as sent, value). Names are tokens (ASCII), given as bytes:
    /// callers compare them ignoring case or copy them, and a UTF-8 check per name would cost more
    /// than either.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(name, value)| (self.at(name), self.at(value)))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let &(_, value) =
            self.spans.iter().find(|&&(n, _)| self.at(n).eq_ignore_ascii_case(name.as_bytes()))?;
        Some(self.at(value))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |&&(n, _)| self.at(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, value)| self.at(value))
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `value` (a slice of one of these fields) as bytes that share the head instead of copying.
    pub fn share(&self, value: &[u8]) -> Bytes {
        self.head.slice_ref(value)
    }
}

impl fmt::Debug for Fields {
    /// Names only: values may be credentials (`x-api-key`, `authorization`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(name, _)| token(name))).finish()
    }
}

/// A header name checked by `httparse` or [`Headers::push`]: a token, so ASCII.
fn token(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

/// A request the server read whole: head and body.
#[derive(Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields.
    pub headers: Fields,
    /// The body (empty when there was none).
    pub body: Bytes,
    /// The request target as sent (origin form `/path?query`, absolute form or `*`).
    target: Bytes,
    /// Where the path and the query are in `target` (the query without its `?`).
    path: Span,
    query: Option<Span>,
}

impl Request {
    /// A request from its parts. `target` must be ASCII (the server refuses other bytes with a
    /// 400). `None`: `target` has no usable path (not origin form, absolute form or `*`).
    pub fn new(method: Method, version: Version, target: Bytes, headers: Fields) -> Option<Self> {
        let (path, query) = split_target(&target)?;
        Some(Self { method, version, headers, body: Bytes::new(), target, path, query })
    }

    /// Parses a whole head (request line, fields, empty line) with the server's rules; for tests
    /// and benchmarks that need a request without a connection.
    pub fn parse(head: &[u8], body: Bytes) -> Option<Self> {
        let mut buf = bytes::BytesMut::from(head);
        let mut req = crate::server::parse_request(&mut buf).ok()??;
        req.body = body;
        Some(req)
    }

    /// A request with `fields`, its head written out and parsed as the server parses it; for
    /// tests and benchmarks. `None` when the server would refuse that head.
    pub fn build(method: &str, target: &str, fields: &[(&str, &[u8])]) -> Option<Self> {
        let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        for (name, value) in fields {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Self::parse(&head, Bytes::new())
    }

    /// The request target as sent.
    pub fn target(&self) -> &str {
        ascii(&self.target)
    }

    /// The path (`/` when an absolute-form target has none), still percent-encoded.
    pub fn path(&self) -> &str {
        if self.path.1 == 0 { "/" } else { ascii(crate::wire::at(&self.target, self.path)) }
    }

    /// The query string without its `?`, if the target has one (possibly empty).
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| ascii(crate::wire::at(&self.target, q)))
    }
}

impl fmt::Debug for Request {
    /// The method, path and header names; neither the query nor values nor the body, which may
    /// carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path())
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Text the server checked to be ASCII.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The path and query of a request target (RFC 9112 §3.2). `None` for a form that has no path.
fn split_target(target: &[u8]) -> Option<(Span, Option<Span>)> {
    // A target is part of a head: far below 4 GiB.
    let span = |at: usize, len: usize| (at as u32, len as u32);
    let path_at = match target {
        [b'/', ..] => 0,
        b"*" => return Some((span(0, 1), None)),
        _ => {
            // Absolute form: `scheme://authority[/path][?query][#fragment]`; the authority ends
            // at the first of `/`, `?` or `#` (a `#` in it would otherwise end the target before
            // the path starts).
            let scheme_end = target.windows(3).position(|w| w == b"://")?;
            if scheme_end == 0 || !target[..scheme_end].iter().all(u8::is_ascii_alphabetic) {
                return None;
            }
            let rest = scheme_end + 3;
            rest + target[rest..]
                .iter()
                .position(|&b| b == b'/' || b == b'?' || b == b'#')
                .unwrap_or(target.len() - rest)
        }
    };
    let end = target.iter().position(|&b| b == b'#').unwrap_or(target.len());
    Some(match target[path_at..end].iter().position(|&b| b == b'?') {
        Some(q) => (span(path_at, q), Some(span(path_at + q + 1, end - path_at - q - 1))),
        None => (span(path_at, end - path_at), None),
    })
}

/// Header fields to write, in order: names and values as byte strings, static or sharing the
/// buffer they came from. Values from outside keygate enter through [`Headers::push`] (checked)
/// or as the fields of a parsed head ([`Headers::push_field`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Bytes, Bytes)>);

/// A header name or value [`Headers::push`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidHeader {
    /// The name is empty or not a token (RFC 9110 §5.1).
    Name,
    /// The value holds a control character (a line break, say).
    Value,
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Name => "not a valid header name",
            Self::Value => "not a valid header value",
        })
    }
}

impl std::error::Error for InvalidHeader {}

impl Headers {
    /// None yet, room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a field keygate itself names and fills (checked in debug builds only).
    pub fn push_static(&mut self, name: &'static str, value: &'static str) {
        debug_assert!(valid_name(name.as_bytes()) && valid_value(value.as_bytes()));
        self.0.push((Bytes::from_static(name.as_bytes()), Bytes::from_static(value.as_bytes())));
    }

    /// Adds a field with a name keygate chose and a value of its own making (digits, ids).
    pub fn push_value(&mut self, name: &'static str, value: Bytes) {
        debug_assert!(valid_name(name.as_bytes()) && valid_value(&value));
        self.0.push((Bytes::from_static(name.as_bytes()), value));
    }

    /// Adds a field after checking it: the name must be a token, the value free of control
    /// characters (tab allowed), so nothing can end the head early or smuggle a field in.
    ///
    /// # Errors
    /// What was wrong; nothing is added.
    pub fn push(&mut self, name: Bytes, value: Bytes) -> Result<(), InvalidHeader> {
        if !valid_name(&name) {
            return Err(InvalidHeader::Name);
        }
        if !valid_value(&value) {
            return Err(InvalidHeader::Value);
        }
        self.0.push((name, value));
        Ok(())
    }

    /// Adds the field `name: value` of a parsed head (checked by `httparse`), sharing its bytes.
    pub fn push_field(&mut self, fields: &Fields, name: &[u8], value: &[u8]) {
        self.0.push((fields.share(name), fields.share(value)));
    }

    /// The first value of `name` (ASCII case ignored).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| &v[..])
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Keeps only the fields for which `keep(name, value)` holds (names as bytes, as
    /// [`Fields::iter`] gives them).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        self.0.retain(|(n, v)| keep(n, v));
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
    }

    /// Every field, in order, as (name as given, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.0.iter().map(|(n, v)| (token(n), &v[..]))
    }

    /// Every field as bytes, for writing.
    pub(crate) fn raw(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.0.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v)))).finish()
    }
}

/// RFC 9110 §5.6.2 `token`.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 §5.5 field value: visible ASCII, space, tab and obs-text (bytes ≥ 0x80).
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// An answer to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The fields; the server adds `date` (unless present), `content-length` and `connection`,
    /// and drops any `content-length`, `transfer-encoding` or `connection` given here (a HEAD
    /// answer keeps a given `content-length`).
    pub headers: Headers,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// `status` with `body` and no fields yet (room for a few).
    pub fn new(status: StatusCode, body: Bytes) -> Self {
        Self { status, headers: Headers::with_capacity(6), body }
    }

    /// `status` with no body and no fields.
    pub fn empty(status: StatusCode) -> Self {
        Self { status, headers: Headers::default(), body: Bytes::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_path_and_query() {
        /// Path and query.
        type Split<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: [(&str, Split<'_>); 11] = [
            ("/dev/candidates", Some(("/dev/candidates", None))),
            ("/a?b=1&c", Some(("/a", Some("b=1&c")))),
            ("/a?", Some(("/a", Some("")))),
            ("/a#frag", Some(("/a", None))),
            ("http://h:1/x/y?q", Some(("/x/y", Some("q")))),
            ("http://h?q", Some(("/", Some("q")))),
            // A fragment right after the authority (found by fuzzing: it panicked).
            ("st://++#ebketaates_x=1", Some(("/", None))),
            ("http://h#f?q", Some(("/", None))),
            ("*", Some(("*", None))),
            ("h:80", None),
            ("://x", None),
        ];
        for (target, want) in cases {
            let req =
                Request::new(Method::GET, Version::HTTP_11, Bytes::from(target), Fields::default());
            assert_eq!(req.as_ref().map(|r| (r.path(), r.query())), want, "{target}");
        }
    }

    #[test]
    fn heads_the_server_refuses_do_not_parse() {
        for head in [
            &b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"[..],
            b"GET h:80 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: v\r\n\r\n",
        ] {
            assert!(Request::parse(head, Bytes::new()).is_none(), "{}", head.escape_ascii());
        }
    }

    #[test]
    fn fields_are_found_ignoring_case_in_order() {
        let req = Request::parse(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cret\r\nAccept: a\r\naccept: b\r\n\r\n",
            Bytes::new(),
        )
        .unwrap();
        assert_eq!(req.headers.get("x-api-key"), Some(&b"s3cret"[..]));
        assert_eq!(req.headers.get_all("ACCEPT").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert!(!req.headers.contains("cookie"));
        let names: Vec<&[u8]> = req.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Host"[..], b"X-Api-Key", b"Accept", b"accept"]);
        // Debug shows names, never values.
        assert!(!format!("{req:?}").contains("s3cret"));
    }

    #[test]
    fn pushed_headers_are_checked() {
        let mut h = Headers::default();
        assert_eq!(h.push(Bytes::from("bad name"), Bytes::from("v")), Err(InvalidHeader::Name));
        assert_eq!(h.push(Bytes::new(), Bytes::from("v")), Err(InvalidHeader::Name));
        assert_eq!(h.push(Bytes::from("a"), Bytes::from("x\r\nb: y")), Err(InvalidHeader::Value));
        assert_eq!(h.push(Bytes::from("a"), Bytes::from("x\0")), Err(InvalidHeader::Value));
        assert!(h.is_empty());
        h.push(Bytes::from("X-A"), Bytes::from("é\tok")).unwrap();
        h.push_static("x-b", "1");
        assert_eq!(h.get("x-a"), Some("é\tok".as_bytes()));
        h.remove("X-B");
        assert_eq!(h.len(), 1);
    }
}
