//! The integrations a route runs, one module each, every one called with one [`Call`]: `mock`
//! answers at once, `http` forwards to an upstream (http-proxy), `lambda` invokes a function
//! through the Lambda proxy integration. Which one a route runs is its [`Target`], resolved when
//! the table is built.

mod http;
mod lambda;
mod mock;

use std::net::SocketAddr;

use keygate_http::{Request, Response};

use crate::Gateway;
use crate::respond::CorsOrigin;
use crate::table::Route;

/// What a route runs, resolved once when the table is built.
#[derive(Debug)]
pub(crate) enum Target {
    /// `lambda-proxy`: the function at this index of the deployment's definition.
    Lambda { function: usize },
    /// `http-proxy`: the URI template, and the parsed upstream when it has no parameters to
    /// substitute (so a request does not parse it again).
    /// `insecure`: `tlsConfig.insecureSkipVerification`.
    Http { uri: String, fixed: Option<crate::upstream::Target>, insecure: bool },
    /// `mock`: an empty 200.
    Mock,
}

impl Target {
    /// The target of an event of the function at `function`.
    pub(crate) fn of(integration: &keygate_types::Integration, function: usize) -> Self {
        match integration {
            keygate_types::Integration::LambdaProxy => Self::Lambda { function },
            keygate_types::Integration::HttpProxy { uri, insecure_skip_verification } => {
                let insecure = *insecure_skip_verification;
                let fixed = crate::upstream::Target::fixed(uri, insecure);
                Self::Http { uri: uri.clone(), fixed, insecure }
            }
            keygate_types::Integration::Mock => Self::Mock,
        }
    }
}

/// One admitted request on its way to its integration.
pub(crate) struct Call<'a> {
    pub(crate) route: &'a Route,
    /// The path parameters the route matched.
    pub(crate) params: &'a [(String, String)],
    pub(crate) req: &'a Request,
    /// The request path after the stage.
    pub(crate) path: &'a str,
    pub(crate) peer: SocketAddr,
    pub(crate) request_id: &'a str,
    /// The id of the key that passed the key check (a private route), never its value.
    pub(crate) key_id: Option<&'a str>,
    /// The route's CORS settings and the request's `Origin`, for error answers.
    pub(crate) cors: CorsOrigin<'a>,
    /// What the route's authorizer let through (`requestContext.authorizer`).
    pub(crate) authorized: Option<&'a crate::authorizer::Authorized>,
}

/// Runs the route's integration.
pub(crate) async fn run(gateway: &Gateway, call: &Call<'_>) -> Response {
    match &call.route.target {
        Target::Mock => mock::answer(),
        Target::Http { uri, fixed, insecure } => {
            http::forward(&gateway.upstream, call, uri, fixed.as_ref(), *insecure).await
        }
        Target::Lambda { function } => lambda::invoke(&gateway.functions, call, *function).await,
    }
}
