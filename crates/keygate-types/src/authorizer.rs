//! Authorizers declared on http events (`authorizer:`), as checked at deploy: Lambda
//! authorizers (TOKEN, REQUEST) and JWT authorizers (Cognito user pools, or any issuer).

use serde::{Deserialize, Serialize};

/// An authorizer guarding a route: run before the key check, as on API Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorizer {
    /// TOKEN and REQUEST: the function of this service that decides (`authorizer: fnName`, or
    /// `name:`); JWT: the authorizer's name.
    pub function: String,
    pub kind: AuthorizerKind,
    /// `identitySource`: where the identity is read from.
    pub identity_source: IdentitySource,
    /// `identityValidationExpression` (TOKEN only): a regular expression the whole token must
    /// match, else 401 without calling the authorizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// `resultTtlInSeconds`: how long an answer is kept per identity (0: not kept).
    pub ttl_secs: u32,
    /// What a JWT authorizer checks (`Some` exactly when `kind` is [`AuthorizerKind::Jwt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
}

/// A JWT authorizer: the token is verified with the issuer's keys (JWKS), no function runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Jwt {
    /// The `iss` a token must have (a Cognito user pool's
    /// `https://cognito-idp.{region}.amazonaws.com/{poolId}`).
    pub issuer: String,
    /// Where the signing keys are: an `http(s)://` URL or an absolute file path (the issuer's
    /// `/.well-known/jwks.json` unless the yml says otherwise).
    pub jwks: String,
    /// Accepted audiences (`aud`, or an access token's `client_id`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// `scopes`: the token's `scope` must hold one of them (empty: no scope needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// A Cognito user pool's authorizer: an ID token without `scopes`, an access token with
    /// them (`token_use`), as API Gateway's `COGNITO_USER_POOLS`.
    #[serde(default)]
    pub cognito: bool,
}

impl Authorizer {
    /// The function a Lambda authorizer runs (`None` for a JWT authorizer).
    pub fn lambda_function(&self) -> Option<&str> {
        match self.kind {
            AuthorizerKind::Token | AuthorizerKind::Request => Some(&self.function),
            AuthorizerKind::Jwt => None,
        }
    }

    /// API Gateway's default `resultTtlInSeconds`.
    pub const DEFAULT_TTL_SECS: u32 = 300;
    /// API Gateway's largest `resultTtlInSeconds`.
    pub const MAX_TTL_SECS: u32 = 3600;
}

/// `type:` of a Lambda authorizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizerKind {
    /// The function gets `{type: TOKEN, authorizationToken, methodArn}`.
    Token,
    /// The function gets the request's headers, query string, path parameters and context.
    Request,
    /// No function: a JWT verified against the issuer's keys ([`Jwt`]).
    Jwt,
}

/// Where an authorizer's identity comes from (`identitySource`): request headers and query
/// string parameters, in the order written. A request that lacks any of them, or sends one
/// empty, gets 401 `Unauthorized` without the authorizer being called, as on API Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdentitySource {
    sources: Vec<Source>,
}

/// One part of an [`IdentitySource`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// `method.request.header.NAME` (compared without case).
    Header(String),
    /// `method.request.querystring.NAME`.
    Query(String),
}

impl IdentitySource {
    /// A TOKEN authorizer's default: `method.request.header.Authorization`.
    pub fn authorization_header() -> Self {
        Self { sources: vec![Source::Header("Authorization".into())] }
    }

    /// Reads `identitySource` as the yml writes it: mapping expressions separated by commas.
    ///
    /// # Errors
    /// An empty list or an expression keygate cannot read from a request (stage variables and
    /// `context` values are not sources keygate has), with what to write instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sources = Vec::new();
        for expr in text.split(',').map(str::trim) {
            let source = if let Some(name) = expr.strip_prefix("method.request.header.") {
                Source::Header(name.to_owned())
            } else if let Some(name) = expr.strip_prefix("method.request.querystring.") {
                Source::Query(name.to_owned())
            } else {
                return Err(format!(
                    "identitySource {expr:?} is not one keygate reads; write \
                     method.request.header.NAME or method.request.querystring.NAME \
                     (several separated by commas)"
                ));
            };
            let (Source::Header(name) | Source::Query(name)) = &source;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("identitySource {expr:?} has no name after its last dot"));
            }
            sources.push(source);
        }
        if sources.is_empty() {
            return Err("identitySource is empty".into());
        }
        Ok(Self { sources })
    }

    /// The parts, in the order written.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, source) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match source {
                Source::Header(name) => write!(f, "method.request.header.{name}")?,
                Source::Query(name) => write!(f, "method.request.querystring.{name}")?,
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for IdentitySource {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<IdentitySource> for String {
    fn from(source: IdentitySource) -> Self {
        source.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_sources_are_headers_and_query_strings_and_nothing_else() {
        let source = IdentitySource::parse(
            "method.request.header.Authorization,method.request.querystring.token",
        )
        .unwrap();
        assert_eq!(
            source.sources(),
            [Source::Header("Authorization".into()), Source::Query("token".into())]
        );
        assert_eq!(
            source.to_string(),
            "method.request.header.Authorization, method.request.querystring.token"
        );
        for bad in ["", "stageVariables.x", "context.user", "method.request.header.", "header.Auth"]
        {
            let err = IdentitySource::parse(bad).unwrap_err();
            assert!(err.contains("identitySource"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_authorizer_survives_the_stored_snapshot() {
        let authorizer = Authorizer {
            function: "auth".into(),
            kind: AuthorizerKind::Token,
            identity_source: IdentitySource::authorization_header(),
            validation: Some("^Bearer .+$".into()),
            jwt: None,
            ttl_secs: Authorizer::DEFAULT_TTL_SECS,
        };
        let json = serde_json::to_value(&authorizer).unwrap();
        assert_eq!(json["kind"], "TOKEN");
        assert_eq!(json["identitySource"], "method.request.header.Authorization");
        let back: Authorizer = serde_json::from_value(json).unwrap();
        assert_eq!(back, authorizer);
        let bad = serde_json::json!({
            "function": "auth", "kind": "TOKEN", "identitySource": "context.x", "ttlSecs": 0
        });
        assert!(serde_json::from_value::<Authorizer>(bad).is_err(), "fails closed on load too");
    }
}
