//! Route matching: a segment trie per stage.
//!
//! Precedence follows API Gateway: a literal segment beats a `{param}` segment, which beats a
//! greedy `{proxy+}`; within a resource an exact method beats `ANY`. Matching backtracks, so
//! `/a/{x}/c` and `/a/b/{y}` both match what they should.

use std::collections::HashMap;

use keygate_types::HttpMethod;

/// Literal segments are matched per request: foldhash instead of SipHash (the keys are the
/// deployed paths, so a client can only look up, never fill a bucket).
type Literals = HashMap<String, Node, foldhash::fast::RandomState>;

/// A matched route: its index in the table and the path parameters (already percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub route: usize,
    pub params: Vec<(String, String)>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Match),
    /// The resource exists but has no method for this request; carries the resource's routes (for
    /// CORS preflight).
    NoMethod {
        routes: Vec<usize>,
    },
    NotFound,
}

#[derive(Debug, Default)]
struct Node {
    literals: Literals,
    param: Option<(String, Box<Node>)>,
    greedy: Option<(String, Vec<(HttpMethod, usize)>)>,
    methods: Vec<(HttpMethod, usize)>,
}

/// The routes of one stage.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
}

/// Why a route could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The same method on the same resource, already added as route `.0`.
    Duplicate(usize),
}

impl Router {
    /// Adds `template` (normalised, e.g. `/candidates/{id}`) with `method` as route `route`.
    ///
    /// # Errors
    /// [`AddError::Duplicate`] when the resource already has that method.
    pub fn add(
        &mut self,
        template: &str,
        method: HttpMethod,
        route: usize,
    ) -> Result<(), AddError> {
        let mut node = &mut self.root;
        let segments: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        for (i, seg) in segments.iter().enumerate() {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if let Some(name) = name.strip_suffix('+') {
                    debug_assert_eq!(i, segments.len() - 1, "greedy segment must be last");
                    let (_, methods) =
                        node.greedy.get_or_insert_with(|| (name.to_owned(), Vec::new()));
                    return push_method(methods, method, route);
                }
                let (_, child) =
                    node.param.get_or_insert_with(|| (name.to_owned(), Box::default()));
                node = child;
            } else {
                node = node.literals.entry((*seg).to_owned()).or_default();
            }
        }
        push_method(&mut node.methods, method, route)
    }

    /// Finds the route for `path` (the request path after the stage, e.g. `/candidates/42`).
    pub fn lookup(&self, path: &str, method: &str) -> Lookup {
        // Paths rarely have more than a handful of segments: no allocation for them.
        let segments: smallvec::SmallVec<[&str; 12]> =
            path.split('/').filter(|s| !s.is_empty()).collect();
        let mut params = Vec::new();
        match find(&self.root, &segments, &mut params) {
            Some(methods) => {
                let exact =
                    methods.iter().find(|(m, _)| *m != HttpMethod::Any && m.matches(method));
                let any = || methods.iter().find(|(m, _)| *m == HttpMethod::Any);
                match exact.or_else(any) {
                    Some(&(_, route)) => Lookup::Found(Match { route, params }),
                    None => Lookup::NoMethod { routes: methods.iter().map(|(_, r)| *r).collect() },
                }
            }
            None => Lookup::NotFound,
        }
    }
}

impl Router {
    /// The routes of the resource `path` matches, whatever their methods (empty when none
    /// does), as [`Lookup::NoMethod`] lists them.
    pub fn routes_at(&self, path: &str) -> Vec<usize> {
        let segments: smallvec::SmallVec<[&str; 12]> =
            path.split('/').filter(|s| !s.is_empty()).collect();
        let found = find(&self.root, &segments, &mut Vec::new());
        found.map_or_else(Vec::new, |methods| methods.iter().map(|&(_, r)| r).collect())
    }
}

fn push_method(
    methods: &mut Vec<(HttpMethod, usize)>,
    method: HttpMethod,
    route: usize,
) -> Result<(), AddError> {
    if let Some(&(_, existing)) = methods.iter().find(|(m, _)| *m == method) {
        return Err(AddError::Duplicate(existing));
    }
    methods.push((method, route));
    Ok(())
}

/// Depth-first search with backtracking; returns the matched resource's methods.
fn find<'a>(
    node: &'a Node,
    segments: &[&str],
    params: &mut Vec<(String, String)>,
) -> Option<&'a [(HttpMethod, usize)]> {
    let Some((first, rest)) = segments.split_first() else {
        return (!node.methods.is_empty()).then_some(node.methods.as_slice());
    };
    if let Some(child) = node.literals.get(*first)
        && let Some(found) = find(child, rest, params)
    {
        return Some(found);
    }
    if let Some((name, child)) = &node.param {
        params.push((name.clone(), decode(first)));
        if let Some(found) = find(child, rest, params) {
            return Some(found);
        }
        params.pop();
    }
    if let Some((name, methods)) = &node.greedy {
        params
            .push((name.clone(), segments.iter().map(|s| decode(s)).collect::<Vec<_>>().join("/")));
        return Some(methods.as_slice());
    }
    None
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, HttpMethod)]) -> Router {
        let mut r = Router::default();
        for (i, (t, m)) in routes.iter().enumerate() {
            r.add(t, *m, i).unwrap();
        }
        r
    }

    fn check(r: &Router, path: &str, method: &str, expected: Option<(usize, &[(&str, &str)])>) {
        let got = r.lookup(path, method);
        match expected {
            Some((route, params)) => {
                let params =
                    params.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
                assert_eq!(got, Lookup::Found(Match { route, params }), "{method} {path}");
            }
            None => assert!(!matches!(got, Lookup::Found(_)), "{method} {path}: {got:?}"),
        }
    }

    #[test]
    fn precedence_and_params() {
        use HttpMethod::*;
        let r = router(&[
            ("/candidates", Get),
            ("/candidates", Post),
            ("/candidates/{id}", Get),
            ("/candidates/search", Get),
            ("/files/{proxy+}", Any),
            ("/", Get),
            ("/a/{x}/c", Get),
            ("/a/b/{y}", Get),
        ]);
        check(&r, "/candidates", "GET", Some((0, &[])));
        check(&r, "/candidates/", "POST", Some((1, &[])));
        check(&r, "/candidates/42", "GET", Some((2, &[("id", "42")])));
        check(&r, "/candidates/search", "GET", Some((3, &[])));
        check(&r, "/candidates/a%20b", "GET", Some((2, &[("id", "a b")])));
        check(&r, "/files/x/y/z.txt", "DELETE", Some((4, &[("proxy", "x/y/z.txt")])));
        check(&r, "/", "GET", Some((5, &[])));
        check(&r, "/a/b/c", "GET", Some((7, &[("y", "c")])));
        check(&r, "/a/q/c", "GET", Some((6, &[("x", "q")])));
        check(&r, "/candidates", "DELETE", None);
        check(&r, "/nope", "GET", None);
        check(&r, "/candidates/1/2", "GET", None);
        assert_eq!(r.lookup("/candidates", "PUT"), Lookup::NoMethod { routes: vec![0, 1] });
    }

    #[test]
    fn exact_method_beats_any() {
        let r = router(&[("/x", HttpMethod::Any), ("/x", HttpMethod::Get)]);
        check(&r, "/x", "GET", Some((1, &[])));
        check(&r, "/x", "PATCH", Some((0, &[])));
    }

    #[test]
    fn duplicates_are_refused() {
        let mut r = router(&[("/x", HttpMethod::Get)]);
        assert_eq!(r.add("/x", HttpMethod::Get, 9), Err(AddError::Duplicate(0)));
    }
}
