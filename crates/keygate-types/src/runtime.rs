//! The Lambda runtime of a function, as a type: which kind of process keygate starts for it.
//!
//! `serverless.yml` names runtimes as AWS does (`provided.al2023`, `nodejs20.x`, `python3.12`,
//! and old names such as the seed's `nodejs4.3`). keygate runs every version of a family on the
//! machine's own interpreter (`node`, `python3`); the name is kept as written, for messages and
//! for `AWS_EXECUTION_ENV`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What starts a function's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `provided`, `provided.al2`, `provided.al2023`: an executable `bootstrap` that speaks the
    /// Runtime API itself (a Rust or Go function).
    Provided,
    /// `nodejs*`: a JavaScript handler, run by `node` with keygate's bootstrap.
    Node,
    /// `python3.*`: a Python handler, run by `python3` with keygate's bootstrap.
    Python,
}

impl RuntimeKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [RuntimeKind; 3] = [Self::Provided, Self::Node, Self::Python];

    /// How users and messages name the family.
    pub fn family(self) -> &'static str {
        match self {
            Self::Provided => "provided",
            Self::Node => "Node.js",
            Self::Python => "Python",
        }
    }
}

/// A runtime keygate runs, as written in `serverless.yml`.
///
/// Serialised as that string, so stored deployments read the same before and after this type.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Runtime {
    kind: RuntimeKind,
    name: String,
}

/// A runtime name keygate does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRuntime(pub String);

impl fmt::Display for UnknownRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown runtime {:?}", self.0)
    }
}

impl std::error::Error for UnknownRuntime {}

impl Runtime {
    /// `provided.al2023`, the runtime of a Rust function built with cargo-lambda.
    pub fn provided_al2023() -> Self {
        Self { kind: RuntimeKind::Provided, name: "provided.al2023".to_owned() }
    }

    /// The runtime `name` names, if keygate runs it: `provided`, `provided.al2`,
    /// `provided.al2023`, `nodejs<major>.x` or `nodejs<major>.<minor>` (old names such as
    /// `nodejs4.3`), and `python3.<minor>`.
    pub fn parse(name: &str) -> Option<Self> {
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
        let kind = if matches!(name, "provided" | "provided.al2" | "provided.al2023") {
            RuntimeKind::Provided
        } else if name.strip_prefix("python3.").is_some_and(digits) {
            RuntimeKind::Python
        } else if name.strip_prefix("nodejs").is_some_and(|v| {
            v.split_once('.')
                .is_some_and(|(major, minor)| digits(major) && (minor == "x" || digits(minor)))
        }) {
            RuntimeKind::Node
        } else {
            return None;
        };
        Some(Self { kind, name: name.to_owned() })
    }

    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The name as written (`nodejs20.x`).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// `AWS_EXECUTION_ENV` as Lambda sets it (`AWS_Lambda_nodejs20.x`); `None` for `provided.*`,
    /// where Lambda sets none.
    pub fn execution_env(&self) -> Option<String> {
        (self.kind != RuntimeKind::Provided).then(|| format!("AWS_Lambda_{}", self.name))
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Runtime({})", self.name)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for Runtime {
    type Err = UnknownRuntime;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownRuntime(s.to_owned()))
    }
}

impl TryFrom<String> for Runtime {
    type Error = UnknownRuntime;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Runtime> for String {
    fn from(r: Runtime) -> String {
        r.name
    }
}

impl PartialEq<str> for Runtime {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for Runtime {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kinds() {
        for (name, kind) in [
            ("provided", RuntimeKind::Provided),
            ("provided.al2", RuntimeKind::Provided),
            ("provided.al2023", RuntimeKind::Provided),
            ("nodejs4.3", RuntimeKind::Node),
            ("nodejs20.x", RuntimeKind::Node),
            ("python3.12", RuntimeKind::Python),
        ] {
            let r = Runtime::parse(name).unwrap();
            assert_eq!(r.kind(), kind, "{name}");
            assert_eq!(r.as_str(), name);
        }
        for name in [
            "",
            "provided.al2032",
            "nodejs",
            "nodejs20",
            "nodejs.x",
            "python3",
            "python2.7",
            "java17",
        ] {
            assert_eq!(Runtime::parse(name), None, "{name}");
        }
    }

    #[test]
    fn serialised_as_the_name_and_refused_when_unknown() {
        let r = Runtime::parse("nodejs4.3").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"nodejs4.3\"");
        assert_eq!(serde_json::from_str::<Runtime>("\"nodejs4.3\"").unwrap(), r);
        assert!(serde_json::from_str::<Runtime>("\"cobol\"").is_err());
        assert_eq!(r.execution_env().as_deref(), Some("AWS_Lambda_nodejs4.3"));
        assert_eq!(Runtime::provided_al2023().execution_env(), None);
    }
}
