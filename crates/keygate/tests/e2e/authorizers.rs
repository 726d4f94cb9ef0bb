//! Lambda authorizers (issue 18) through the binary: a Node.js TOKEN authorizer and a Python
//! REQUEST authorizer guard routes of Node.js functions; the policy, the cache and API
//! Gateway's answers (401, 403 explicit and implicit deny, 500) as on AWS, and the key check
//! after the authorizer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const YML: &str = "service: guarded
provider:
  name: aws
  runtime: nodejs20.x
  stage: dev
  region: eu-west-1
  apiKeys:
    - guarded-key
functions:
  auth:
    handler: auth.check
  reqAuth:
    handler: req_auth.check
    runtime: python3.11
  hello:
    handler: hello.show
    events:
      - http:
          path: hello
          method: get
          authorizer: auth
      - http:
          path: hello
          method: post
          authorizer: auth
      - http:
          path: fresh
          method: get
          authorizer:
            name: auth
            resultTtlInSeconds: 0
      - http:
          path: brief
          method: get
          authorizer:
            name: auth
            resultTtlInSeconds: 1
            identityValidationExpression: '[a-z]+'
      - http:
          path: keyed
          method: get
          private: true
          authorizer: auth
      - http:
          path: tenants/{tenant}
          method: any
          authorizer:
            name: reqAuth
            type: request
            identitySource: method.request.header.X-User, method.request.querystring.tenant
";

/// The TOKEN authorizer: its decision by token, and how many times it ran in its `context`.
const AUTH_JS: &str = r#"'use strict';
let calls = 0;
const policy = (effect, resource) => ({
  Version: '2012-10-17',
  Statement: [{ Action: 'execute-api:Invoke', Effect: effect, Resource: resource }],
});
module.exports.check = (event, context, callback) => {
  calls += 1;
  const arn = event.methodArn;
  // arn:aws:execute-api:region:account:api/stage/METHOD/path
  const stage = arn.split('/').slice(0, 2).join('/');
  const answer = (effect, resource) => callback(null, {
    principalId: 'user-' + event.authorizationToken,
    policyDocument: policy(effect, resource),
    context: { calls, tenant: 'acme', admin: true, type: event.type },
  });
  switch (event.authorizationToken) {
    case 'wide': return answer('Allow', stage + '/*');
    case 'narrow': return answer('Allow', arn);
    case 'getonly': return answer('Allow', stage + '/GET/*');
    case 'deny': return answer('Deny', stage + '/*');
    case 'unauthorized': return callback('Unauthorized');
    case 'boom': throw new Error('the token service is down');
    case 'garbage': return callback(null, { principalId: 'x', policyDocument: { Statement: [
      { Action: 'execute-api:Invoke', Effect: 'Allow', Resource: '*',
        Condition: { IpAddress: { 'aws:SourceIp': '10.0.0.0/8' } } }] } });
    default: return answer('Allow', stage + '/*');
  }
};
"#;

/// The REQUEST authorizer: allows the tenant named in the query string for the user in the
/// header, for every method under its path, and tells what it was sent.
const REQ_AUTH_PY: &str = r#"calls = 0

def check(event, context):
    global calls
    calls += 1
    user = event['headers'].get('X-User') or event['headers'].get('x-user')
    tenant = event['queryStringParameters']['tenant']
    arn = event['methodArn']
    stage = '/'.join(arn.split('/')[:2])
    effect = 'Allow' if user == 'ann' and tenant == event['pathParameters']['tenant'] else 'Deny'
    return {
        'principalId': user,
        'policyDocument': {'Version': '2012-10-17', 'Statement': [
            {'Action': 'execute-api:Invoke', 'Effect': effect,
             'Resource': stage + '/*/tenants/' + tenant}]},
        'context': {'calls': calls, 'type': event['type'], 'method': event['httpMethod'],
                    'hasBody': 'body' in event},
    }
"#;

const HELLO_JS: &str = r#"'use strict';
module.exports.show = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({
    authorizer: event.requestContext.authorizer,
    apiKey: event.requestContext.identity.apiKey,
  }),
});
"#;

fn service(env: &Env) -> std::path::PathBuf {
    env.write("auth.js", AUTH_JS);
    env.write("req_auth.py", REQ_AUTH_PY);
    env.write("hello.js", HELLO_JS);
    env.write("serverless.yml", YML)
}

/// `GET|POST path` with `Authorization: token` (none for `None`).
async fn call(srv: &Server, method: &str, path: &str, token: Option<&str>) -> Reply {
    let c = client();
    let url = srv.url(path);
    let mut req = match method {
        "POST" => c.post(&url),
        _ => c.get(&url),
    };
    if let Some(token) = token {
        req = req.header("authorization", token);
    }
    send(req).await
}

/// The `context.calls` the function saw: how many times the authorizer had run for the answer.
fn calls(reply: &Reply) -> u64 {
    let authorizer = &reply.json()["authorizer"];
    authorizer["calls"].as_str().and_then(|c| c.parse().ok()).expect("context.calls")
}

fn assert_answer(reply: &Reply, status: u16, error_type: &str, body: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.header("x-amzn-errortype"), Some(error_type), "{reply:?}");
    assert_eq!(reply.body, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_authorizer_decides_caches_and_answers_as_api_gateway() {
    let env = Env::new();
    let yml = service(&env);
    let report = env.deploy(&yml, &[]);
    let key = Env::key_value(&report);
    assert_eq!(report["endpoints"][0]["authorizer"], "auth", "{report}");
    let info = env.ok(&["info"]);
    assert!(info.contains("/dev/hello  (authorizer auth)\n"), "{info}");
    assert!(info.contains("/dev/keyed  (authorizer auth, api key required)"), "{info}");
    let srv = env.serve();

    // Allowed: the function sees the principal and the context, every value a string.
    let first = call(&srv, "GET", "/dev/hello", Some("wide")).await;
    assert_eq!(first.status, 200, "{first:?}\n{}", srv.logs());
    let seen = &first.json()["authorizer"];
    assert_eq!(seen["principalId"], "user-wide");
    assert_eq!(seen["tenant"], "acme");
    assert_eq!(seen["admin"], "true");
    assert_eq!(seen["type"], "TOKEN");
    assert!(seen["integrationLatency"].is_u64(), "{seen}");
    // Within the TTL the answer is reused, for another method too when its policy covers it.
    let n = calls(&first);
    let again = call(&srv, "GET", "/dev/hello", Some("wide")).await;
    assert_eq!((again.status, calls(&again)), (200, n));
    assert_eq!(again.json()["authorizer"]["integrationLatency"], 0);
    let post = call(&srv, "POST", "/dev/hello", Some("wide")).await;
    assert_eq!((post.status, calls(&post)), (200, n));

    // A policy that covers only GET: cached, it still refuses POST (an implicit deny) without
    // running the authorizer again.
    let get = call(&srv, "GET", "/dev/hello", Some("getonly")).await;
    assert_eq!(get.status, 200, "{get:?}");
    let denied = call(&srv, "POST", "/dev/hello", Some("getonly")).await;
    let not_allowed = r#"{"message":"User is not authorized to access this resource"}"#;
    assert_answer(&denied, 403, "AccessDeniedException", not_allowed);
    let narrow = call(&srv, "GET", "/dev/hello", Some("narrow")).await;
    assert_eq!(narrow.status, 200, "{narrow:?}");
    let covered = call(&srv, "POST", "/dev/hello", Some("narrow")).await;
    assert_answer(&covered, 403, "AccessDeniedException", not_allowed);

    // API Gateway's other answers.
    let deny = call(&srv, "GET", "/dev/hello", Some("deny")).await;
    assert_answer(
        &deny,
        403,
        "AccessDeniedException",
        r#"{"message":"User is not authorized to access this resource with an explicit deny"}"#,
    );
    let unauthorized = r#"{"message":"Unauthorized"}"#;
    let missing = call(&srv, "GET", "/dev/hello", None).await;
    assert_answer(&missing, 401, "UnauthorizedException", unauthorized);
    let empty = call(&srv, "GET", "/dev/hello", Some("")).await;
    assert_answer(&empty, 401, "UnauthorizedException", unauthorized);
    let said = call(&srv, "GET", "/dev/hello", Some("unauthorized")).await;
    assert_answer(&said, 401, "UnauthorizedException", unauthorized);
    let failure = r#"{"message": "Authorizer error"}"#;
    let boom = call(&srv, "GET", "/dev/hello", Some("boom")).await;
    assert_answer(&boom, 500, "AuthorizerConfigurationException", failure);
    let garbage = call(&srv, "GET", "/dev/hello", Some("garbage")).await;
    assert_answer(&garbage, 500, "AuthorizerConfigurationException", failure);
    // The validation expression refuses a token before the authorizer sees it.
    let invalid = call(&srv, "GET", "/dev/brief", Some("Not-Lowercase")).await;
    assert_answer(&invalid, 401, "UnauthorizedException", unauthorized);

    // TTL 0: the authorizer runs every time.
    let a = calls(&call(&srv, "GET", "/dev/fresh", Some("wide")).await);
    let b = calls(&call(&srv, "GET", "/dev/fresh", Some("wide")).await);
    assert!(b > a, "{a} then {b}");
    // TTL 1 s: reused within it, asked again after it.
    let a = calls(&call(&srv, "GET", "/dev/brief", Some("token")).await);
    let b = calls(&call(&srv, "GET", "/dev/brief", Some("token")).await);
    assert_eq!(a, b);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let c = calls(&call(&srv, "GET", "/dev/brief", Some("token")).await);
    assert!(c > b, "{b} then {c}");

    // The key check comes after the authorizer: an allowed caller without a key is refused,
    // with one is served (and the function sees both).
    let c = client();
    let keyed = srv.url("/dev/keyed");
    send(c.get(&keyed).header("authorization", "wide")).await.assert_forbidden();
    let no_token = send(c.get(&keyed).header("x-api-key", &key)).await;
    assert_answer(&no_token, 401, "UnauthorizedException", unauthorized);
    let both = send(c.get(&keyed).header("authorization", "wide").header("x-api-key", &key)).await;
    assert_eq!(both.status, 200, "{both:?}");
    assert_eq!(both.json()["apiKey"], Value::String(key.clone()));
    assert_eq!(both.json()["authorizer"]["principalId"], "user-wide");

    // The gateway says why an authorizer failed (the type of its error, or what is wrong
    // with its answer), and tokens never reach its logs.
    eventually(Duration::from_secs(5), || async {
        let logs = srv.logs();
        logs.contains("authorizer failed") && logs.contains("Condition")
    })
    .await;
    let logs = srv.logs();
    for token in ["getonly", "narrow"] {
        assert!(!logs.contains(token), "{token:?} in the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_authorizer_reads_two_sources_and_one_answer_covers_every_method() {
    let env = Env::new();
    let yml = service(&env);
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let c = client();
    let tenant = |method: reqwest::Method, user: Option<&str>, query: &str| {
        let mut req = c.request(method, srv.url(&format!("/dev/tenants/t1{query}")));
        if let Some(user) = user {
            req = req.header("x-user", user);
        }
        send(req)
    };

    let first = tenant(reqwest::Method::GET, Some("ann"), "?tenant=t1").await;
    assert_eq!(first.status, 200, "{first:?}\n{}", srv.logs());
    let seen = &first.json()["authorizer"];
    assert_eq!(
        (&seen["principalId"], &seen["type"], &seen["method"], &seen["hasBody"]),
        (&json!("ann"), &json!("REQUEST"), &json!("GET"), &json!("false"))
    );
    let n = calls(&first);
    // One cached answer: its `*/tenants/t1` covers DELETE and POST as well.
    for method in [reqwest::Method::DELETE, reqwest::Method::POST] {
        let r = tenant(method, Some("ann"), "?tenant=t1").await;
        assert_eq!((r.status, calls(&r)), (200, n), "{r:?}");
    }
    // Either source missing: 401 without the authorizer.
    let unauthorized = r#"{"message":"Unauthorized"}"#;
    let no_query = tenant(reqwest::Method::GET, Some("ann"), "").await;
    assert_answer(&no_query, 401, "UnauthorizedException", unauthorized);
    let no_header = tenant(reqwest::Method::GET, None, "?tenant=t1").await;
    assert_answer(&no_header, 401, "UnauthorizedException", unauthorized);
    // Another identity is another answer: a deny.
    let bob = tenant(reqwest::Method::GET, Some("bob"), "?tenant=t1").await;
    assert_eq!((bob.status, bob.header("x-amzn-errortype")), (403, Some("AccessDeniedException")));
}

const KEYED_YML: &str = "service: keyed
provider:
  name: aws
  runtime: nodejs20.x
  stage: dev
  apiGateway:
    apiKeySourceType: AUTHORIZER
    apiKeys:
      - name: tenant-key
        value: TenantKeyValue0123456789abc
    usagePlan:
      throttle:
        rateLimit: 1
        burstLimit: 2
functions:
  auth:
    handler: keyauth.check
  hello:
    handler: hello.show
    events:
      - http:
          path: hello
          method: get
          private: true
          authorizer:
            name: auth
            resultTtlInSeconds: 0
";

/// Maps tokens to API keys, as an authorizer that knows its tenants would.
const KEYAUTH_JS: &str = r#"'use strict';
const keys = { good: 'TenantKeyValue0123456789abc', stranger: 'NotAKeyOfThisKeygate000000' };
module.exports.check = async (event) => ({
  principalId: event.authorizationToken,
  policyDocument: { Version: '2012-10-17', Statement: [
    { Action: 'execute-api:Invoke', Effect: 'Allow', Resource: event.methodArn }] },
  usageIdentifierKey: keys[event.authorizationToken],
});
"#;

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_the_authorizer_are_checked_and_throttled_by_their_plan() {
    let env = Env::new();
    env.write("keyauth.js", KEYAUTH_JS);
    env.write("hello.js", HELLO_JS);
    let yml = env.write("serverless.yml", KEYED_YML);
    env.deploy(&yml, &[]);
    let srv = env.serve();
    let c = client();
    let url = srv.url("/dev/hello");
    let with = |token: &str| send(c.get(&url).header("authorization", token));

    // The authorizer's key passes, and is the one the function sees.
    let ok = with("good").await;
    assert_eq!(ok.status, 200, "{ok:?}\n{}", srv.logs());
    assert_eq!(ok.json()["apiKey"], "TenantKeyValue0123456789abc");
    // A key sent in x-api-key counts for nothing: the key is the authorizer's.
    let header_only = send(
        c.get(&url)
            .header("authorization", "stranger")
            .header("x-api-key", "TenantKeyValue0123456789abc"),
    )
    .await;
    header_only.assert_forbidden();
    // An authorizer that names no key, or one keygate does not know: 403.
    with("nobody").await.assert_forbidden();
    with("stranger").await.assert_forbidden();
    // The key's plan throttles it (burst 2, 1 a second): of the one above and four more, at
    // most two more pass unless these take seconds.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(with("good").await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}
