//! The one table of gateway-made responses.
//!
//! Every response the gateway makes itself (not the integration's) comes from [`GatewayError`]:
//! status, the AWS `x-amzn-ErrorType` and the exact body Amazon API Gateway sends. A change of
//! wording is one line here.

/// Gateway response types (AWS names in the comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayError {
    /// INVALID_API_KEY: key missing, unknown, disabled, deleted or not on this stage.
    Forbidden,
    /// MISSING_AUTHENTICATION_TOKEN: no such stage, resource or method.
    MissingAuthenticationToken,
    /// THROTTLED.
    TooManyRequests,
    /// QUOTA_EXCEEDED.
    LimitExceeded,
    /// Integration failure: crash, error or malformed proxy response.
    InternalServerError,
    /// INTEGRATION_TIMEOUT.
    EndpointRequestTimedOut,
    /// REQUEST_TOO_LARGE.
    RequestTooLarge,
    /// BAD_REQUEST_PARAMETERS: a path parameter bound for an `http-proxy` upstream would leave
    /// the integration's URI (a `.` or `..` segment, a backslash or NUL).
    BadRequestPath,
    /// UNAUTHORIZED: a Lambda authorizer's identity source missing or empty, a token that fails
    /// `identityValidationExpression`, or the authorizer answered `Unauthorized`.
    Unauthorized,
    /// ACCESS_DENIED: the authorizer's policy denies the method explicitly. (AWS's REST APIs
    /// spell this one body's key `Message`; keygate writes `message` as in every other answer.)
    ExplicitDeny,
    /// ACCESS_DENIED: no statement of the authorizer's policy allows the method.
    ImplicitDeny,
    /// AUTHORIZER_CONFIGURATION_ERROR / AUTHORIZER_FAILURE: the authorizer failed, timed out or
    /// answered something that is not a policy keygate can evaluate. (AWS answers
    /// `{"message": null}`; keygate says what kind of failure it was.)
    AuthorizerFailure,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSpec {
    pub status: u16,
    /// Value of `x-amzn-ErrorType`.
    pub error_type: &'static str,
    /// Exact body bytes, as AWS sends them (note the space in the 5xx bodies).
    pub body: &'static str,
}

impl GatewayError {
    pub const fn spec(self) -> ResponseSpec {
        let (status, error_type, body) = match self {
            Self::Forbidden => (403, "ForbiddenException", r#"{"message":"Forbidden"}"#),
            Self::MissingAuthenticationToken => (
                403,
                "MissingAuthenticationTokenException",
                r#"{"message":"Missing Authentication Token"}"#,
            ),
            Self::TooManyRequests => {
                (429, "TooManyRequestsException", r#"{"message":"Too Many Requests"}"#)
            }
            Self::LimitExceeded => {
                (429, "LimitExceededException", r#"{"message":"Limit Exceeded"}"#)
            }
            Self::InternalServerError => {
                (502, "InternalServerErrorException", r#"{"message": "Internal server error"}"#)
            }
            Self::EndpointRequestTimedOut => (
                504,
                "InternalServerErrorException",
                r#"{"message": "Endpoint request timed out"}"#,
            ),
            Self::RequestTooLarge => {
                (413, "RequestEntityTooLargeException", r#"{"message":"Request Too Long"}"#)
            }
            Self::BadRequestPath => {
                (400, "BadRequestException", r#"{"message":"Invalid request path"}"#)
            }
            Self::Unauthorized => (401, "UnauthorizedException", r#"{"message":"Unauthorized"}"#),
            Self::ExplicitDeny => (
                403,
                "AccessDeniedException",
                r#"{"message":"User is not authorized to access this resource with an explicit deny"}"#,
            ),
            Self::ImplicitDeny => (
                403,
                "AccessDeniedException",
                r#"{"message":"User is not authorized to access this resource"}"#,
            ),
            Self::AuthorizerFailure => {
                (500, "AuthorizerConfigurationException", r#"{"message": "Authorizer error"}"#)
            }
        };
        ResponseSpec { status, error_type, body }
    }
}
