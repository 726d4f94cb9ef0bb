//! HTTP event paths: normalisation and validation of `path:` templates.
//!
//! A path is normalised to a leading `/` and no trailing `/` (the root is `/`). Each segment is
//! literal text (`A-Z a-z 0-9 . _ ~ ! $ & ' ( ) * + , ; = : @ % -`), a parameter `{name}` (name of
//! `A-Z a-z 0-9 _ . -`), or, as the last segment only, a greedy parameter `{name+}`.

/// A validated route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutePath {
    /// Normalised template, e.g. `/candidates/{id}`.
    pub(crate) path: String,
    /// The template with parameter names erased (`/candidates/{}`), so two routes that match
    /// the same requests compare equal.
    pub(crate) shape: String,
}

fn literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._~!$&'()*+,;=:@%-".contains(c)
}

fn param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-".contains(c)
}

/// Normalises and validates `raw`; the error says what is wrong and what is allowed.
pub(crate) fn parse(raw: &str) -> Result<RoutePath, String> {
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(RoutePath { path: "/".to_owned(), shape: "/".to_owned() });
    }
    let segments: Vec<&str> = trimmed.split('/').collect();
    let mut names: Vec<&str> = Vec::new();
    let mut shape = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if seg.is_empty() {
            return Err(format!(
                "the path {raw:?} has an empty segment (`//`); remove the extra `/`"
            ));
        }
        if *seg == "." || *seg == ".." {
            return Err(format!(
                "the path {raw:?} has a `{seg}` segment; paths cannot contain `.` or `..` segments"
            ));
        }
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.chars().all(param_char) {
                return Err(format!(
                    "the path {raw:?} has a bad parameter `{seg}`; a parameter is `{{name}}` (or \
                    `{{name+}}` \
                     last), its name made of letters, digits, `_`, `.` and `-`"
                ));
            }
            if greedy && !last {
                return Err(format!(
                    "the path {raw:?} has the greedy parameter `{seg}` before its end; \
                    `{{{name}+}}` \
                     can only be the last segment"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "the path {raw:?} uses the parameter `{{{name}}}` twice; give each parameter \
                    its own name"
                ));
            }
            names.push(name);
            shape.push_str(if greedy { "/{+}" } else { "/{}" });
            continue;
        }
        if let Some(bad) = seg.chars().find(|c| !literal_char(*c)) {
            let why = match bad {
                '{' | '}' => " (a parameter must be a whole segment: `{name}`)".to_owned(),
                '?' | '#' => " (a query string or fragment is not part of the path)".to_owned(),
                _ => String::new(),
            };
            return Err(format!(
                "the path {raw:?} contains {bad:?}{why}; path segments may contain only letters, \
                 digits and ._~!$&'()*+,;=:@%-, or be a parameter {{name}}"
            ));
        }
        shape.push('/');
        shape.push_str(seg);
    }
    Ok(RoutePath { path: format!("/{}", segments.join("/")), shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (raw, want) in [
            ("", "/"),
            ("/", "/"),
            ("candidates", "/candidates"),
            ("/candidates/", "/candidates"),
            ("candidates/{id}", "/candidates/{id}"),
            ("files/{proxy+}", "/files/{proxy+}"),
            ("{proxy+}", "/{proxy+}"),
            ("a.b/c-d/~e/v1:x@y", "/a.b/c-d/~e/v1:x@y"),
        ] {
            assert_eq!(parse(raw).unwrap().path, want, "{raw}");
        }
        assert_eq!(parse("a/{id}/b/{x+}").unwrap().shape, "/a/{}/b/{+}");
    }

    #[test]
    fn rejects() {
        for (raw, needle) in [
            ("a//b", "empty segment"),
            ("a/../b", "`..`"),
            ("a/./b", "`.`"),
            ("{proxy+}/x", "greedy"),
            ("a/{}", "bad parameter"),
            ("a/{b c}", "bad parameter"),
            ("a/x{id}", "whole segment"),
            ("a?b=1", "query string"),
            ("a b", "' '"),
            ("{id}/{id}", "twice"),
        ] {
            let e = parse(raw).unwrap_err();
            assert!(e.contains(needle), "{raw}: {e}");
        }
    }
}
