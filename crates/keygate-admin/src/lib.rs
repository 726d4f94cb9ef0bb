//! keygate admin API (in progress): Amazon API Gateway's control-plane paths and JSON on a
//! listener of its own, authenticated with AWS Signature Version 4 or a bearer token.
//!
//! Layout: [`sigv4`] verifies AWS Signature Version 4 requests (pure, no IO).

pub mod sigv4;
