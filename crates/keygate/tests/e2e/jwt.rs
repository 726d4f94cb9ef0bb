//! JWT authorizers (issue 18): tokens verified against a JSON Web Key Set served by a local
//! issuer (the test's own HTTP server) or read from a file (a Cognito user pool's, offline),
//! RS256 and ES256; expired, wrong audience or issuer, unknown key, bad signature, `alg: none`
//! and HMAC refused with 401; a rotated key picked up without a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A 2048-bit RSA key made for this test only (`openssl genrsa 2048`), and its modulus.
const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCfcF3A2ZjFJWi7\nxZHqwp0yzNLCVC8xQJUNdvnjrxqoCIVsBAC34W7BuoIbQAqrFeDUfe9bn7u6P0bd\n59M7iqtUlYsyuuXo3/QtAoBBC88iWj3G8/tV+HDrv+EyU5miXGMsU1rca3Ld1Ggn\nwL3UXrZweGVjE44a8GPHMXLSTu05AFes5fKrWi4eMcnNKiM8DSEFEGdYMEtpKfOB\nvzHvUl/rtqibr7uc85WsHnznnRUb/o2IfK/T0VnQGaQwMss85v4n+kX9/OfghTB6\nM7Kwlaah7OtYWPexReyNM6m3sBn/jsf7IIiumemIgABgbU2FEroatZ7+DRUQnVNr\nsuExXHa1AgMBAAECggEAFSHxI0MUJylWsPC2bv3dlSKl2sEKwkXzm6XF6GJIr7X1\nbUQ4jibQpdfhL9h0sYmEU9XfWG8bFEwXygjUrCMso1jw6sfv+kZY2HBo7HYyvbRl\nVM345cO4v96ebCu9hNInCPSBag7J2lIxffdjkdb96nliwteQMczkBL5uoCZ69d96\nsHztbCJRf4jwBDitL0OedNwHyb0NV5MBc+36XxSiwDRCMUY7AH2RLSLpDtxjgxmU\nfvoH+3sopEcYdoBJ1XgpdDHpqOykHjNehLghRjO3+MB3mHFuDbVaCjcH9B2KV7ou\nEtObvj77k2qO0jNyDgDN+9kWatRD3Us1/ZZnHeVG0QKBgQDL1fTUCKL6XJzo5HI4\n+EvbrdG8jSCux0KBm4NKuKSfm1Sxt9CJPYdMThoFRHHv8ghcaHbJCmuDABnSbVdR\nQQtNZsG09wx/cIl0lyxCsKLYgAK3dOAH3KMOSQaV6DWbbWh4cyCeN8EcLPEkxtQu\n1xkBPAs4UGtKMVcmVprxf0GluQKBgQDIPc6Y1dsBbIt5zM29vFdniuSkwipau0S0\nhT81tTogbHfhENyUl9fdmbkiOO1VXTWFtIqcV7HIRTpfBxNI5GoCHR2TSVQT48Z8\n8ujYxjNA0d+VOCCNqJg1BushiiXp8M9VNEgpekJE+8X2LNtgvYpSdBiouapgqCk9\n7led/kaW3QKBgQC1geIvZTlrY0i+AZ7MqB00kwVutuThfcH1E3vH7793+KNkVWA2\ntTljczCsfBRRK97SGpubzdGKp25W+NKGIjtkQxo+gLb6TEW6MltRT2TTELpajpJn\nrcrsj45zsoD51GTwzOPAv7kP090veHW8+ADmHoeHL+U5/dGy6++xGDZm0QKBgFBK\n8Fe6kQneI4NgizNEnWuodwxVyzP8mY0lTPZVSAyOUfeOklSHGokCRgkh+JDdQkPt\n5BLS2zfqAoDuTl5RMOzODfjsU2lyUTnzEUkzGIQqY9Pq4KrM6tOAhbI6Of+3jvuk\nbjcrjf0pU/TlgcYl2pw7b1Pgtx/w7jCmLL3uoxGFAoGBAJNEGLdpo0WgFVoSbKyf\n/NrfSZmFY94Z6o9zC9TpZZ36791KkwbGnnUVf1kdD7dUI5mC1tXHWkJ4wSrPkXNi\nDTppJGOPtqDXVeapcmCrWPE5S5mpl1uxREw/iDeA8gvKbCaafc4PUS+TF6akXkEV\nbgbneB9XTdiamzHOwHo97gHT\n-----END PRIVATE KEY-----";
const RSA_N: &str = "n3BdwNmYxSVou8WR6sKdMszSwlQvMUCVDXb5468aqAiFbAQAt-FuwbqCG0AKqxXg1H3vW5-7uj9G3efTO4qrVJWLMrrl6N_0LQKAQQvPIlo9xvP7Vfhw67_hMlOZolxjLFNa3Gty3dRoJ8C91F62cHhlYxOOGvBjxzFy0k7tOQBXrOXyq1ouHjHJzSojPA0hBRBnWDBLaSnzgb8x71Jf67aom6-7nPOVrB58550VG_6NiHyv09FZ0BmkMDLLPOb-J_pF_fzn4IUwejOysJWmoezrWFj3sUXsjTOpt7AZ_47H-yCIrpnpiIAAYG1NhRK6GrWe_g0VEJ1Ta7LhMVx2tQ";

/// An issuer's key set, served at `/.well-known/jwks.json` on 127.0.0.1 (changeable, for a
/// rotation), counting fetches.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, count) = (Arc::clone(&jwks), Arc::clone(&fetches));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let (served, count) = (Arc::clone(&served), Arc::clone(&count));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let ok = head.starts_with(b"GET /.well-known/jwks.json ");
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().to_string();
                    let status = if ok { "200 OK" } else { "404 Not Found" };
                    let res = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(res.as_bytes()).await;
                });
            }
        });
        Self { url, jwks, fetches }
    }
}

/// An EC P-256 key: its signing key and its public JWK.
fn ec_key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                     "x": b64(&point[1..33]), "y": b64(&point[33..])});
    (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk)
}

fn rsa_key(kid: &str) -> (EncodingKey, Value) {
    let jwk =
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"});
    (EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(), jwk)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

const YML: &str = "service: jwt-guarded
provider:
  name: aws
  runtime: nodejs20.x
  stage: dev
functions:
  hello:
    handler: hello.show
    events:
      - http:
          path: profile
          method: get
          authorizer:
            type: jwt
            issuerUrl: ISSUER
            audience: [app]
      - http:
          path: pool
          method: get
          authorizer:
            arn: arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Test
            scopes: [candidates/read]
            jwks: pool-keys.json
      - http:
          path: down
          method: get
          authorizer:
            type: jwt
            issuerUrl: http://127.0.0.1:1/
";

const HELLO_JS: &str = r#"'use strict';
module.exports.show = async (event) => ({
  statusCode: 200,
  body: JSON.stringify(event.requestContext.authorizer),
});
"#;

#[tokio::test(flavor = "multi_thread")]
async fn jwt_authorizers_verify_tokens_against_the_issuers_keys() {
    let (ec, ec_jwk) = ec_key("ec1");
    let (rsa, rsa_jwk) = rsa_key("rsa1");
    let issuer = Issuer::start(json!({"keys": [ec_jwk, rsa_jwk]})).await;
    let env = Env::new();
    env.write("hello.js", HELLO_JS);
    let pool_issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Test";
    let (pool_key, pool_jwk) = ec_key("pool1");
    env.write("pool-keys.json", &json!({"keys": [pool_jwk]}).to_string());
    let yml = env.write("serverless.yml", &YML.replace("ISSUER", &issuer.url));
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let c = client();
    let profile = srv.url("/dev/profile");
    let call = |url: &str, token: Option<&str>| {
        let mut req = c.get(url);
        if let Some(token) = token {
            req = req.header("authorization", token);
        }
        send(req)
    };
    let claims = |extra: Value| {
        let mut claims = json!({"iss": issuer.url, "aud": "app", "sub": "ann",
                                "email": "ann@example.com", "exp": now() + 300});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let unauthorized = |r: &Reply| {
        assert_eq!((r.status, r.body.as_str()), (401, r#"{"message":"Unauthorized"}"#), "{r:?}");
        assert_eq!(r.header("x-amzn-errortype"), Some("UnauthorizedException"));
    };

    // ES256 and RS256, with or without `Bearer `: the claims reach the function as strings.
    let es = sign(Algorithm::ES256, "ec1", &ec, &claims(json!({"admin": true})));
    let ok = call(&profile, Some(&es)).await;
    assert_eq!(ok.status, 200, "{ok:?}\n{}", srv.logs());
    assert_eq!(ok.json()["claims"]["sub"], "ann");
    assert_eq!(ok.json()["claims"]["admin"], "true");
    let rs = sign(Algorithm::RS256, "rsa1", &rsa, &claims(json!({})));
    let ok = call(&profile, Some(&format!("Bearer {rs}"))).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "the keys are kept");

    // Refused: 401, each.
    unauthorized(&call(&profile, None).await);
    let expired = claims(json!({"exp": now() - 600}));
    unauthorized(&call(&profile, Some(&sign(Algorithm::ES256, "ec1", &ec, &expired))).await);
    let early = claims(json!({"nbf": now() + 600}));
    unauthorized(&call(&profile, Some(&sign(Algorithm::ES256, "ec1", &ec, &early))).await);
    let audience = claims(json!({"aud": "another-app"}));
    unauthorized(&call(&profile, Some(&sign(Algorithm::ES256, "ec1", &ec, &audience))).await);
    let iss = claims(json!({"iss": "https://elsewhere.example.com"}));
    unauthorized(&call(&profile, Some(&sign(Algorithm::ES256, "ec1", &ec, &iss))).await);
    let (other, _) = ec_key("ec1");
    let forged = sign(Algorithm::ES256, "ec1", &other, &claims(json!({})));
    unauthorized(&call(&profile, Some(&forged)).await);
    // The RSA key's signature under the EC key's id, and an HMAC keyed with public material.
    unauthorized(
        &call(&profile, Some(&sign(Algorithm::RS256, "ec1", &rsa, &claims(json!({}))))).await,
    );
    let hmac = EncodingKey::from_secret(RSA_N.as_bytes());
    unauthorized(
        &call(&profile, Some(&sign(Algorithm::HS256, "rsa1", &hmac, &claims(json!({}))))).await,
    );
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"ec1"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    unauthorized(&call(&profile, Some(&none)).await);
    unauthorized(&call(&profile, Some("not.a.token")).await);

    // Rotation: a token under a new key id is refused until the issuer publishes the key,
    // then accepted, without a restart.
    let (rotated, rotated_jwk) = ec_key("ec2");
    let token = sign(Algorithm::ES256, "ec2", &rotated, &claims(json!({})));
    unauthorized(&call(&profile, Some(&token)).await);
    issuer.jwks.lock().unwrap()["keys"].as_array_mut().unwrap().push(rotated_jwk);
    tokio::time::sleep(keygate_gateway::authorizer::REFETCH_EVERY + Duration::from_millis(200))
        .await;
    let ok = call(&profile, Some(&token)).await;
    assert_eq!(ok.status, 200, "{ok:?}\n{}", srv.logs());
    // Made-up key ids do not make keygate fetch the keys for each.
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    for kid in ["x1", "x2", "x3"] {
        unauthorized(
            &call(&profile, Some(&sign(Algorithm::ES256, kid, &ec, &claims(json!({}))))).await,
        );
    }
    assert!(issuer.fetches.load(Ordering::SeqCst) <= fetched + 1, "one fetch at most");

    // An issuer whose keys cannot be had: 500, never a pass, and said in the log.
    let down = srv.url("/dev/down");
    let token = sign(Algorithm::ES256, "ec1", &ec, &claims(json!({})));
    let failed = call(&down, Some(&token)).await;
    assert_eq!(failed.status, 500, "{failed:?}");
    assert_eq!(failed.header("x-amzn-errortype"), Some("AuthorizerConfigurationException"));
    eventually(Duration::from_secs(5), || async {
        srv.logs().contains("cannot read the JWT authorizer's keys")
    })
    .await;

    // A Cognito user pool's authorizer with scopes: an access token holding one of them.
    let pool = srv.url("/dev/pool");
    let access = json!({"iss": pool_issuer, "token_use": "access", "client_id": "c1",
                        "scope": "openid candidates/read", "sub": "bob", "exp": now() + 300});
    let ok = call(&pool, Some(&sign(Algorithm::ES256, "pool1", &pool_key, &access))).await;
    assert_eq!(ok.status, 200, "{ok:?}\n{}", srv.logs());
    assert_eq!(ok.json()["claims"]["scope"], "openid candidates/read");
    let mut id_token = access.clone();
    id_token["token_use"] = json!("id");
    unauthorized(&call(&pool, Some(&sign(Algorithm::ES256, "pool1", &pool_key, &id_token))).await);
    let mut unscoped = access.clone();
    unscoped["scope"] = json!("openid");
    unauthorized(&call(&pool, Some(&sign(Algorithm::ES256, "pool1", &pool_key, &unscoped))).await);
}
