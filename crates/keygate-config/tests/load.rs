//! Loads `serverless.yml` texts through the public API, table-driven through [`run`].
//!
//! YAML is written with a `|` margin (see [`y`]); [`HEAD`] is lines 1-4 of most cases, so their
//! own lines start at 5.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keygate_config::{Error, LoadOptions, Loaded, load, load_str};
use keygate_types::plan::{Quota, QuotaPeriod, Throttle, UsagePlanDecl};
use keygate_types::{Cors, HttpMethod, Integration, StreamTable};

/// A YAML text written with a margin: on each line everything up to and including the first `|`
/// is dropped; leading blank lines are skipped.
fn y(s: &str) -> String {
    s.lines()
        .skip_while(|l| l.trim().is_empty())
        .map(|l| format!("{}\n", l.split_once('|').map_or("", |(_, rest)| rest)))
        .collect()
}

/// Lines 1-4 of most cases: a valid service and provider.
const HEAD: &str = "service: svc\nprovider:\n  name: aws\n  runtime: nodejs20.x\n";

fn with_head(rest: &str) -> String {
    format!("{HEAD}{}", y(rest))
}

/// The seed service (the article's snippets, with `- http:` indented under `events:`).
fn seed() -> String {
    y("
        |service: candidate-service
        |provider:
        |  name: aws
        |  runtime: nodejs4.3
        |  stage: dev
        |  region: us-east-1
        |  environment:
        |    CANDIDATE_TABLE: candidate-${opt:stage, self:provider.stage}
        |  apiKeys:
        |    - candidate-service-api-key
        |functions:
        |  candidateSubmission:
        |    handler: api/candidates.submit
        |    memorySize: 128
        |    description: Submit candidate information and starts interview process.
        |    events:
        |      - http:
        |          path: candidates
        |          method: post
        |          cors: true
        |          private: true
    ")
}

/// A value that must never appear in an error or a note.
const SECRET: &str = "SuperSecretKeyValue0123456789";

enum Expect {
    /// Loads; the closure checks the result.
    Ok(fn(&Loaded)),
    /// Fails with exactly these lines, in this order.
    Err(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    yml: String,
    stage: Option<&'static str>,
    /// `--region`.
    region: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
    /// `--allow-unknown`.
    allow_unknown: bool,
    expect: Expect,
}

fn case(name: &'static str, yml: String, expect: Expect) -> Case {
    Case { name, yml, stage: None, region: None, env: &[], allow_unknown: false, expect }
}

/// The case run with `--allow-unknown`.
fn allowing(mut c: Case) -> Case {
    c.allow_unknown = true;
    c
}

/// The case run with `--stage stage`.
fn staged(stage: &'static str, mut c: Case) -> Case {
    c.stage = Some(stage);
    c
}

/// The case run with `--region`.
fn in_region(region: &'static str, mut c: Case) -> Case {
    c.region = Some(region);
    c
}

/// Appended to a service that never mentions `functions`: one route, so that the rule that a
/// service must serve something (tested on its own) does not hide what the case is about. It
/// comes last, so the lines of the case are unchanged.
const ONE_ROUTE: &str = "functions:\n  zz:\n    handler: zz\n    runtime: provided.al2023\n    \
                         events:\n      - http: GET zz\n";

fn load_case(c: &Case) -> Result<Loaded, Error> {
    let with_route;
    let yml = if c.yml.contains("functions") || !c.yml.contains("provider:") {
        &c.yml
    } else {
        with_route = format!("{}{ONE_ROUTE}", c.yml);
        &with_route
    };
    let env: BTreeMap<&str, &str> = c.env.iter().copied().collect();
    let lookup = move |k: &str| env.get(k).map(|v| (*v).to_owned());
    let opts = LoadOptions {
        stage: c.stage.map(str::to_owned),
        region: c.region.map(str::to_owned),
        env: &lookup,
        allow_unknown: c.allow_unknown,
    };
    load_str("serverless.yml", yml, Path::new("/srv/app"), &opts)
}

/// Runs every case, collecting all failures before panicking. Whatever the case, no error, note
/// or debug output may contain [`SECRET`].
fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let result = load_case(c);
        match (&c.expect, result) {
            (Expect::Ok(check), Ok(loaded)) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&loaded)));
                if r.is_err() {
                    failures.push(format!("{}: check failed for {loaded:#?}", c.name));
                }
                if format!("{loaded:?}").contains(SECRET) {
                    failures
                        .push(format!("{}: a key value leaked into the notes or debug", c.name));
                }
            }
            (Expect::Ok(_), Err(e)) => failures.push(format!("{}: unexpected error:\n{e}", c.name)),
            (Expect::Err(want), Ok(_)) => {
                failures.push(format!("{}: loaded, expected errors {want:#?}", c.name))
            }
            (Expect::Err(want), Err(e)) => {
                let text = e.to_string();
                let got: Vec<&str> = text.lines().collect();
                if got != *want {
                    failures.push(format!("{}:\n got:  {got:#?}\n want: {want:#?}", c.name));
                }
                if text.contains(SECRET) || format!("{e:?}").contains(SECRET) {
                    failures.push(format!("{}: a key value leaked into the error", c.name));
                }
                if e.diagnostics().len() != got.len() {
                    failures.push(format!("{}: one diagnostic per line expected", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

fn env(l: &Loaded, f: usize, k: &str) -> String {
    l.definition.functions[f].environment.get(k).cloned().unwrap_or_else(|| panic!("no {k}"))
}

#[test]
fn seed_service() {
    let prod = staged(
        "prod",
        case(
            "seed with --stage prod",
            seed(),
            Expect::Ok(|l| {
                assert_eq!(l.definition.stage, "prod");
                assert_eq!(env(l, 0, "CANDIDATE_TABLE"), "candidate-prod");
                assert_eq!(
                    l.definition.functions[0].function_name,
                    "candidate-service-prod-candidateSubmission"
                );
            }),
        ),
    );
    run(vec![
        case(
            "seed",
            seed(),
            Expect::Ok(|l| {
                let d = &l.definition;
                assert_eq!(d.service, "candidate-service");
                assert_eq!((d.stage.as_str(), d.region.as_str()), ("dev", "us-east-1"));
                assert_eq!(d.base_dir, PathBuf::from("/srv/app"));
                assert!(d.usage_plans.is_empty());
                assert_eq!(d.api_keys.len(), 1);
                let key = &d.api_keys[0];
                assert_eq!(key.name, "candidate-service-api-key");
                assert!(key.value.is_none() && key.enabled);
                assert_eq!(key.usage_plan, None);
                assert_eq!(d.functions.len(), 1);
                let f = &d.functions[0];
                assert_eq!(f.name, "candidateSubmission");
                assert_eq!(f.function_name, "candidate-service-dev-candidateSubmission");
                assert_eq!(f.handler, "api/candidates.submit");
                assert_eq!(f.runtime, "nodejs4.3");
                assert_eq!((f.memory_size, f.timeout_secs), (128, 6));
                assert_eq!(
                    f.description.as_deref(),
                    Some("Submit candidate information and starts interview process.")
                );
                assert_eq!(env(l, 0, "CANDIDATE_TABLE"), "candidate-dev");
                assert_eq!(f.artifact, None);
                assert_eq!(f.events.len(), 1);
                let e = &f.events[0];
                assert_eq!((e.path.as_str(), e.method), ("/candidates", HttpMethod::Post));
                assert!(e.private);
                assert_eq!(e.cors, Some(Cors::default()));
                assert_eq!(e.integration, Integration::LambdaProxy);
                assert_eq!(
                    l.notes,
                    vec![
                        "provider.apiKeys is deprecated: move it under provider.apiGateway.apiKeys \
                         (Serverless v3 removed provider.apiKeys; keygate still accepts it)"
                    ]
                );
            }),
        ),
        prod,
        case(
            "the article's snippet as printed, `- http:` at column 1 under `events:`",
            y("
                |service: candidate-service
                |provider:
                |  name: aws
                |  runtime: nodejs4.3
                |functions:
                |  candidateSubmission:
                |    handler: api/candidates.submit
                |    memorySize: 128
                |    description: Submit candidate information and starts interview process.
                |    events:
                |- http:
                |    path: candidates
                |    method: post
                |    cors: true
                |    private: true
            "),
            Expect::Err(&[
                "serverless.yml:11:3: invalid YAML: while parsing a block mapping, did not find \
                 expected key (the list item on line 11 starts at column 1, left of `events:` on \
                 line 10 at column 5; indent the `-` to at least column 5 so the list belongs to \
                 `events:`)",
            ]),
        ),
    ]);
}

#[test]
fn variables() {
    let mut cases = vec![
        case(
            "env, quoted defaults, numbers and booleans as text",
            with_head(
                "
                |  environment:
                |    A: ${env:HOME_DIR}
                |    B: ${env:NOPE, 'single'}
                |    C: ${env:NOPE, \"double\"}
                |    D: 42
                |    E: true
                |    F: ${env:NOPE, 7}
                |functions:
                |  f:
                |    handler: h.h
                |    events: [{http: GET f}]
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(env(l, 0, "A"), "/home/me");
                assert_eq!(env(l, 0, "B"), "single");
                assert_eq!(env(l, 0, "C"), "double");
                assert_eq!(env(l, 0, "D"), "42");
                assert_eq!(env(l, 0, "E"), "true");
                assert_eq!(env(l, 0, "F"), "7");
            }),
        ),
        case(
            "nesting in self and env addresses, several variables in one string",
            with_head(
                "
                |  environment:
                |    TABLE: ${self:custom.${sls:stage}.table}
                |    SECRET_NAME: ${env:${self:custom.var}}
                |    FULL: ${self:service}-${sls:stage}-${self:provider.region}
                |custom:
                |  var: DB_NAME
                |  dev:
                |    table: dev-table
                |  prod:
                |    table: prod-table
                |functions:
                |  f:
                |    handler: h.h
                |    events: [{http: GET f}]
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(env(l, 0, "TABLE"), "dev-table");
                assert_eq!(env(l, 0, "SECRET_NAME"), "db1");
                assert_eq!(env(l, 0, "FULL"), "svc-dev-us-east-1");
            }),
        ),
        case(
            "whole-value variables keep their type",
            with_head(
                "
                |  timeout: ${self:custom.timeout}
                |  memorySize: ${env:MEM}
                |  environment: ${self:custom.env}
                |custom:
                |  timeout: 30
                |  private: true
                |  env:
                |    X: from-custom
                |  path: items
                |functions:
                |  f:
                |    handler: h.h
                |    reservedConcurrency: ${opt:rc, 3}
                |    events:
                |      - http:
                |          path: ${self:custom.path}
                |          method: get
                |          private: ${self:custom.private}
                ",
            ),
            Expect::Ok(|l| {
                let f = &l.definition.functions[0];
                assert_eq!((f.timeout_secs, f.memory_size), (30, 256));
                assert_eq!(f.reserved_concurrency, Some(3));
                assert_eq!(env(l, 0, "X"), "from-custom");
                assert!(f.events[0].private);
                assert_eq!(f.events[0].path, "/items");
            }),
        ),
        case(
            "self through a variable-valued map and a list index",
            with_head(
                "
                |custom:
                |  base: ${self:custom.other}
                |  other:
                |    name: deep
                |  list: [a, b]
                |functions:
                |  f:
                |    handler: h.h
                |    environment:
                |      N: ${self:custom.base.name}
                |      L: ${self:custom.list.1}
                |    events: [{http: GET f}]
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(env(l, 0, "N"), "deep");
                assert_eq!(env(l, 0, "L"), "b");
            }),
        ),
        case(
            "fallback chain to provider.stage, sls:stage, the old service form",
            y("
                |service:
                |  name: svc
                |provider:
                |  name: aws
                |  runtime: nodejs20.x
                |  stage: qa
                |  environment:
                |    S: ${opt:stage, self:provider.stage}
                |    T: ${sls:stage}
                |    U: ${self:service}
                |functions:
                |  f:
                |    handler: h.h
                |    events: [{http: GET f}]
            "),
            Expect::Ok(|l| {
                assert_eq!(l.definition.stage, "qa");
                assert_eq!(env(l, 0, "S"), "qa");
                assert_eq!(env(l, 0, "T"), "qa");
                assert_eq!(env(l, 0, "U"), "svc");
            }),
        ),
        case(
            "variables in ignored sections are not resolved",
            with_head(
                "
                |resources:
                |  Resources:
                |    T:
                |      Type: AWS::SNS::Topic
                |      Properties:
                |        Name: ${ssm:/my/param}
                |        Arn: !GetAtt X.Arn
                |functions:
                |  f:
                |    handler: h.h
                |    events: [{http: GET f}]
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(l.notes, vec!["ignored (not used by keygate): resources.Resources.T"]);
            }),
        ),
        case(
            "unset environment variable",
            with_head(
                "
                |functions:
                |  f:
                |    handler: ${env:FOO}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:14: functions.f.handler: cannot resolve ${env:FOO}: environment \
                 variable FOO is not set; set it or give a default: ${env:FOO, 'value'}",
            ]),
        ),
        in_region(
            "eu-west-2",
            case(
                "--region wins over provider.region and is ${opt:region}",
                y("
                    |service: svc
                    |provider:
                    |  name: aws
                    |  runtime: nodejs20.x
                    |  region: us-east-1
                    |  environment:
                    |    R: ${opt:region, 'x'}
                    |functions:
                    |  f:
                    |    handler: h.h
                    |    events: [{http: GET f}]
                "),
                Expect::Ok(|l| {
                    assert_eq!(l.definition.region, "eu-west-2");
                    assert_eq!(env(l, 0, "R"), "eu-west-2");
                }),
            ),
        ),
        in_region(
            "Eu West",
            case(
                "a --region that is no region name",
                with_head(""),
                Expect::Err(&[
                    "serverless.yml:1:1: --region: expected a region such as us-east-1, \
                 found \"Eu West\"",
                ]),
            ),
        ),
        case(
            "no --region and no default",
            with_head(
                "
                |  environment:
                |    R: ${opt:region}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:8: provider.environment.R: cannot resolve ${opt:region}: no \
                 --region option was given; pass --region or give a default: ${opt:region, \
                 'us-east-1'}",
            ]),
        ),
        case(
            "no --stage and no default",
            with_head(
                "
                |  environment:
                |    TABLE: table-${opt:stage}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:12: provider.environment.TABLE: cannot resolve ${opt:stage}: no \
                 --stage option was given; pass --stage or give a default: ${opt:stage, 'dev'}",
            ]),
        ),
        case(
            "no fallback has a value",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: ${opt:runtime, self:custom.runtime}
            "),
            Expect::Err(&["serverless.yml:4:12: provider.runtime: cannot resolve ${opt:runtime, \
                 self:custom.runtime}: keygate has no --runtime option, and custom.runtime is not \
                 defined in this file; add a default at the end, e.g. ${opt:runtime, \
                 self:custom.runtime, 'value'}"]),
        ),
        case(
            "self reference to a missing key",
            with_head(
                "
                |functions:
                |  f:
                |    handler: ${self:custom.handler}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:14: functions.f.handler: cannot resolve ${self:custom.handler}: \
                 custom.handler is not defined in this file; define it or give a default: \
                 ${self:custom.handler, 'value'}",
            ]),
        ),
        case(
            "a cycle is reported once, where it closes",
            with_head(
                "
                |custom:
                |  a: ${self:custom.b}
                |  b: x-${self:custom.a}
                |functions:
                |  f:
                |    handler: ${self:custom.a}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:6: custom.a: the variables here refer back to this value \
                 (custom.a -> custom.b -> custom.a); break the cycle",
            ]),
        ),
        case(
            "unsupported and unknown sources",
            with_head(
                "
                |  environment:
                |    A: ${ssm:/path/to/param}
                |    B: ${file(./config.json):key}
                |    C: ${sls:instanceId}
                |    D: ${cf:stack.output}
                |    E: ${foo:bar}
                |    F: ${env:K, 'SuperSecretKeyValue0123456789'} and ${aws:accountId}
                |    G: ${param:domain}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:8: provider.environment.A: keygate does not support the `ssm:` \
                 variable source yet; use a literal value or ${env:NAME} instead",
                "serverless.yml:7:8: provider.environment.B: keygate does not support the \
                 `file(...)` variable source yet; use a literal value or ${env:NAME} instead",
                "serverless.yml:8:8: provider.environment.C: ${sls:instanceId} is not supported by \
                 keygate (it changes on every deploy); use a fixed value or ${env:NAME}",
                "serverless.yml:9:8: provider.environment.D: keygate does not support the `cf:` \
                 variable source yet; use a literal value or ${env:NAME} instead",
                "serverless.yml:10:8: provider.environment.E: unknown variable source `foo`; \
                 keygate \
                 supports self, opt, env and sls",
                "serverless.yml:11:8: provider.environment.F: keygate does not support the `aws:` \
                 variable source yet; use a literal value or ${env:NAME} instead",
                "serverless.yml:12:8: provider.environment.G: keygate does not support the \
                 `param:` variable source yet; use a literal value or ${env:NAME} instead",
            ]),
        ),
        case(
            "a map cannot be embedded in text; an unquoted fallback; an unclosed variable",
            with_head(
                "
                |  environment:
                |    A: x-${self:custom}
                |    B: ${env:NOPE, dev}
                |    C: ${env:X
                |custom:
                |  a: 1
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:8: provider.environment.A: ${self:custom} resolves to a map, \
                 which cannot be placed inside text; only strings, numbers and booleans can (or \
                 make the variable the whole value)",
                "serverless.yml:7:8: provider.environment.B: a fallback must be a variable \
                 (source:address), a quoted string, a number or true/false; quote text fallbacks, \
                 e.g. ${opt:stage, 'dev'}",
                "serverless.yml:8:8: provider.environment.C: the variable starting with `${env:X` \
                 has no closing `}`",
            ]),
        ),
    ];
    for c in &mut cases {
        c.env = &[("HOME_DIR", "/home/me"), ("DB_NAME", "db1"), ("MEM", "256")];
    }
    run(cases);
}

#[test]
fn http_events() {
    run(vec![
        case(
            "short forms",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http: GET candidates
                |      - http: get /candidates/{id}
                |      - http: ANY {proxy+}
                |      - http: post /
                ",
            ),
            Expect::Ok(|l| {
                let ev = &l.definition.functions[0].events;
                let got: Vec<(&str, HttpMethod)> =
                    ev.iter().map(|e| (e.path.as_str(), e.method)).collect();
                assert_eq!(
                    got,
                    vec![
                        ("/candidates", HttpMethod::Get),
                        ("/candidates/{id}", HttpMethod::Get),
                        ("/{proxy+}", HttpMethod::Any),
                        ("/", HttpMethod::Post),
                    ]
                );
                assert!(ev.iter().all(|e| !e.private && e.cors.is_none()));
            }),
        ),
        case(
            "long forms: any, *, greedy path, cors object, integrations",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: /files/{path+}/
                |          method: '*'
                |          cors:
                |            origin: 'https://a.example, https://b.example'
                |            headers: '*'
                |            allowCredentials: true
                |            maxAge: 86400
                |            cacheControl: max-age=600
                |            methods: [get, post]
                |      - http:
                |          path: proxy/{proxy+}
                |          method: any
                |          integration: http-proxy
                |          request:
                |            uri: https://backend.example/{proxy}
                |            parameters:
                |              paths:
                |                proxy: true
                |      - http:
                |          path: ping
                |          method: GET
                |          integration: MOCK
                |          cors:
                |            origins: ['https://c.example']
                |      - http:
                |          path: ''
                |          method: head
                |          integration: aws_proxy
                |          cors: false
                ",
            ),
            Expect::Ok(|l| {
                let ev = &l.definition.functions[0].events;
                assert_eq!(
                    (ev[0].path.as_str(), ev[0].method),
                    ("/files/{path+}", HttpMethod::Any)
                );
                let cors = ev[0].cors.as_ref().unwrap();
                assert_eq!(cors.origins, vec!["https://a.example", "https://b.example"]);
                assert_eq!(cors.headers, vec!["*"]);
                assert_eq!(cors.methods, vec!["GET", "POST"]);
                assert!(cors.allow_credentials);
                assert_eq!(cors.max_age, Some(86400));
                assert_eq!(cors.cache_control.as_deref(), Some("max-age=600"));
                assert_eq!(
                    ev[1].integration,
                    Integration::HttpProxy {
                        uri: "https://backend.example/{proxy}".into(),
                        insecure_skip_verification: false
                    }
                );
                assert_eq!(ev[2].integration, Integration::Mock);
                let c2 = ev[2].cors.as_ref().unwrap();
                assert_eq!(c2.origins, vec!["https://c.example"]);
                assert_eq!(c2.headers, Cors::default().headers);
                assert_eq!((ev[3].path.as_str(), ev[3].method), ("/", HttpMethod::Head));
                assert_eq!(ev[3].integration, Integration::LambdaProxy);
                assert_eq!(ev[3].cors, None);
                assert_eq!(
                    l.notes,
                    vec![
                        "ignored (not used by keygate): \
                         functions.f.events[1].http.request.parameters"
                    ]
                );
            }),
        ),
        case(
            "other event types are noted",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - schedule: rate(1 minute)
                |      - http:
                |          path: a
                |          method: get
                |          timeoutInMillis: 5000
                |      - sqs: arn:aws:sqs:x
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(l.definition.functions[0].events.len(), 1);
                assert_eq!(
                    l.notes,
                    vec![
                        "ignored events (keygate serves only http events): schedule \
                         (functions.f.events[0]), sqs (functions.f.events[2])",
                        "ignored (not used by keygate): functions.f.events[1].http.timeoutInMillis",
                    ]
                );
            }),
        ),
        // Issue 25, finding 2: `authorizer: aws_iam` without `private:` deployed with a note and
        // served anonymous callers. Every auth setting keygate cannot enforce is an error.
        case(
            "auth settings keygate cannot enforce are errors, never notes",
            with_head(
                "
                |  endpointType: PRIVATE
                |  resourcePolicy:
                |    - Effect: Deny
                |  apiGateway:
                |    apiKeySourceType: AUTHORIZER
                |    resourcePolicy: []
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          authorizer: aws_iam
                |      - http:
                |          path: b
                |          method: get
                |          private: true
                |          authorizer:
                |            name: auth
                |            type: request
                ",
            ),
            Expect::Err(&[
                "serverless.yml:5:17: provider.endpointType: keygate cannot make an API reachable \
                 from a VPC only: it serves it on the address it listens on (--listen, 127.0.0.1 \
                 by default); remove endpointType: PRIVATE and choose that address instead",
                "serverless.yml:6:3: provider.resourcePolicy: keygate does not evaluate API Gateway \
                 resource policies, so it cannot enforce this one and would serve the API to every caller it restricts; remove resourcePolicy and \
                 restrict callers with API keys (`private: true`) and the address keygate listens \
                 on (--listen)",
                "serverless.yml:10:5: provider.apiGateway.resourcePolicy: keygate does not evaluate \
                 API Gateway resource policies, so it cannot enforce this one and would serve the API to every caller it restricts; remove resourcePolicy and \
                 restrict callers with API keys (`private: true`) and the address keygate listens \
                 on (--listen)",
                "serverless.yml:18:23: functions.f.events[0].http.authorizer: AWS_IAM \
                 authorization (SigV4-signed requests checked against IAM policies) is not run by \
                 keygate; protect the route with `private: true` and API keys",
                "serverless.yml:24:19: functions.f.events[1].http.authorizer.name: no function \
                 \"auth\" in this service's functions; an authorizer names a function declared \
                 under `functions:` (it has f)",
            ]),
        ),
        case(
            "an authorizer's own mistakes are named",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          authorizer:
                |            name: auth
                |            identitySorce: method.request.header.Auth
                |            identitySource: stageVariables.token
                |            resultTtlInSeconds: 7200
                |            identityValidationExpression: '^Bearer ('
                |      - http:
                |          path: b
                |          method: get
                |          authorizer:
                |            arn: arn:aws:lambda:us-east-1:1:function:elsewhere
                |      - http:
                |          path: c
                |          method: get
                |          authorizer:
                |            type: jwt
                |            issuerUrl: http://idp.example.com/
                |      - http:
                |          path: d
                |          method: get
                |          authorizer:
                |            type: cognito_user_pools
                |            arn: arn:aws:cognito-idp:us-east-1:1:pool/x
                |      - http:
                |          path: e
                |          method: get
                |          authorizer:
                |            type: jwt
                |            audience: [app]
                |      - http:
                |          path: g
                |          method: get
                |          authorizer:
                |            name: f
                |            audience: [app]
                |            type: Basic
                |      - http:
                |          path: h
                |          method: get
                |          authorizer:
                |            name: f
                |            audience: [app]
                ",
            ),
            Expect::Err(&[
                "serverless.yml:14:13: functions.f.events[0].http.authorizer.identitySorce: \
                 unknown key in authorizer (did you mean `identitySource`?); expected one of \
                 name, arn, type, identitySource, identityValidationExpression, \
                 resultTtlInSeconds, managedExternally, claims, scopes, issuerUrl, audience, jwks",
                "serverless.yml:15:29: functions.f.events[0].http.authorizer.identitySource: \
                 identitySource \"stageVariables.token\" is not one keygate reads; write \
                 method.request.header.NAME or method.request.querystring.NAME (several \
                 separated by commas)",
                "serverless.yml:16:33: functions.f.events[0].http.authorizer.resultTtlInSeconds: \
                 expected whole seconds from 0 to 3600, found 7200",
                "serverless.yml:17:43: \
                 functions.f.events[0].http.authorizer.identityValidationExpression: is not a \
                 regular expression keygate can read: unclosed group",
                "serverless.yml:22:18: functions.f.events[1].http.authorizer.arn: an authorizer \
                 given by a function ARN (a function outside this service) is not run by \
                 keygate; name a function of this service with `name:`",
                "serverless.yml:28:24: functions.f.events[2].http.authorizer.issuerUrl: the \
                 issuer \"http://idp.example.com/\" is plain http on another machine, so its keys \
                 could be swapped on the way; use https:// (http:// is accepted for 127.0.0.1 \
                 and localhost only)",
                "serverless.yml:34:18: functions.f.events[3].http.authorizer.arn: expected a user \
                 pool's ARN, arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID, found \
                 \"arn:aws:cognito-idp:us-east-1:1:pool/x\"",
                "serverless.yml:38:11: functions.f.events[4].http.authorizer.issuerUrl: missing; \
                 the URL of the tokens' issuer (their `iss`)",
                "serverless.yml:47:19: functions.f.events[5].http.authorizer.type: expected \
                 token, request, COGNITO_USER_POOLS or jwt, found \"Basic\"",
                "serverless.yml:53:13: functions.f.events[6].http.authorizer.audience: applies to \
                 JWT and Cognito authorizers only; remove it",
            ]),
        ),
        case(
            "an authorizer names a function of this service and is kept on its route",
            with_head(
                "
                |functions:
                |  auth:
                |    handler: auth.check
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          authorizer: auth
                |      - http:
                |          path: b
                |          method: get
                |          private: true
                |          authorizer:
                |            name: auth
                |            type: REQUEST
                |            identitySource: method.request.header.X-User, method.request.querystring.t
                |            resultTtlInSeconds: 0
                |      - http:
                |          path: c
                |          method: get
                |          authorizer:
                |            name: auht
                |            identityValidationExpression: 'Bearer .+'
                ",
            ),
            Expect::Err(&[
                "serverless.yml:28:19: functions.f.events[2].http.authorizer.name: no function \
                 \"auht\" in this service's functions (did you mean `auth`?); an authorizer names \
                 a function declared under `functions:` (it has auth, f)",
            ]),
        ),
        case(
            "authorizers load",
            with_head(
                "
                |functions:
                |  auth:
                |    handler: auth.check
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          authorizer: auth
                |      - http:
                |          path: b
                |          method: get
                |          private: true
                |          authorizer:
                |            name: auth
                |            type: REQUEST
                |            identitySource: method.request.header.X-User, method.request.querystring.t
                |            resultTtlInSeconds: 0
                |      - http:
                |          path: c
                |          method: get
                |          authorizer:
                |            name: auth
                |            identityValidationExpression: 'Bearer .+'
                ",
            ),
            Expect::Ok(|l| {
                use keygate_types::{Authorizer, AuthorizerKind, IdentitySource};
                let events = &l.definition.functions[1].events;
                assert_eq!(
                    events[0].authorizer,
                    Some(Authorizer {
                        function: "auth".into(),
                        kind: AuthorizerKind::Token,
                        identity_source: IdentitySource::authorization_header(),
                        validation: None,
                        ttl_secs: Authorizer::DEFAULT_TTL_SECS,
                        jwt: None,
                    })
                );
                let b = events[1].authorizer.as_ref().unwrap();
                assert_eq!((b.kind, b.ttl_secs), (AuthorizerKind::Request, 0));
                assert_eq!(
                    b.identity_source,
                    IdentitySource::parse(
                        "method.request.header.X-User, method.request.querystring.t"
                    )
                    .unwrap()
                );
                assert!(events[1].private);
                let c = events[2].authorizer.as_ref().unwrap();
                assert_eq!(c.validation.as_deref(), Some("Bearer .+"));
                assert!(l.notes.is_empty(), "{:?}", l.notes);
            }),
        ),
        case(
            "JWT and Cognito authorizers load",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          authorizer: arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_Ab
                |      - http:
                |          path: b
                |          method: get
                |          authorizer:
                |            name: pool
                |            arn: arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_Ab
                |            scopes: [candidates/read]
                |            claims: [email]
                |      - http:
                |          path: c
                |          method: get
                |          authorizer:
                |            type: jwt
                |            issuerUrl: https://login.example.com/
                |            audience: app-1, app-2
                |            jwks: keys/jwks.json
                ",
            ),
            Expect::Ok(|l| {
                use keygate_types::{AuthorizerKind, Jwt};
                let events = &l.definition.functions[0].events;
                let a = events[0].authorizer.as_ref().unwrap();
                assert_eq!((a.kind, a.function.as_str()), (AuthorizerKind::Jwt, "cognito"));
                let pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Ab";
                assert_eq!(
                    a.jwt,
                    Some(Jwt {
                        issuer: pool.into(),
                        jwks: format!("{pool}/.well-known/jwks.json"),
                        audience: vec![],
                        scopes: vec![],
                        cognito: true,
                    })
                );
                let b = events[1].authorizer.as_ref().unwrap();
                assert_eq!(b.function, "pool");
                assert_eq!(b.jwt.as_ref().unwrap().scopes, ["candidates/read"]);
                let c = events[2].authorizer.as_ref().unwrap().jwt.as_ref().unwrap();
                assert_eq!(c.issuer, "https://login.example.com/");
                assert_eq!(c.audience, ["app-1", "app-2"]);
                assert!(c.jwks.starts_with('/') && c.jwks.ends_with("keys/jwks.json"), "{}", c.jwks);
                assert!(!c.cognito);
                // `claims` picks the claims passed on; keygate passes all.
                assert_eq!(
                    l.notes,
                    ["ignored (not used by keygate): functions.f.events[1].http.authorizer.claims"]
                );
            }),
        ),
        case(
            "keys from an authorizer need an authorizer on every private route",
            with_head(
                "
                |  apiGateway:
                |    apiKeySourceType: authorizer
                |functions:
                |  auth:
                |    handler: auth.check
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          private: true
                |          authorizer: auth
                |      - http:
                |          path: b
                |          method: get
                |          private: true
                |      - http: GET c
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:23: provider.apiGateway.apiKeySourceType: AUTHORIZER takes each \
                 private route's API key from its authorizer's usageIdentifierKey, and GET /b (f) \
                 has no authorizer, so every request to it would get 403; add an `authorizer:` to \
                 it or set apiKeySourceType to HEADER",
            ]),
        ),
        case(
            "keys from an authorizer load",
            with_head(
                "
                |  apiGateway:
                |    apiKeySourceType: AUTHORIZER
                |functions:
                |  auth:
                |    handler: auth.check
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          private: true
                |          authorizer: auth
                |      - http: GET c
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(l.definition.api_key_source, keygate_types::ApiKeySource::Authorizer);
            }),
        ),
        case(
            "the auth settings keygate does enforce load",
            with_head(
                "
                |  endpointType: regional
                |  apiGateway:
                |    apiKeySourceType: HEADER
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http: GET a
                ",
            ),
            Expect::Ok(|l| {
                assert!(l.notes.is_empty(), "{:?}", l.notes);
            }),
        ),
        case(
            "bad method, bad paths, missing fields",
            with_head(
                "
                |functions:
                |  candidateList:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: candidates
                |          method: FETCH
                |      - http: GET a//b
                |      - http:
                |          path: '{proxy+}/x'
                |          method: get
                |      - http:
                |          method: get
                |      - http: GET
                ",
            ),
            Expect::Err(&[
                "serverless.yml:11:19: functions.candidateList.events[0].http.method: expected one \
                 of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, ANY, found \"FETCH\"",
                "serverless.yml:12:15: functions.candidateList.events[1].http: the path \"a//b\" \
                 has \
                 an empty segment (`//`); remove the extra `/`",
                "serverless.yml:14:17: functions.candidateList.events[2].http.path: the path \
                 \"{proxy+}/x\" has the greedy parameter `{proxy+}` before its end; `{proxy+}` can \
                 only be the last segment",
                "serverless.yml:16:9: functions.candidateList.events[3].http.path: missing; \
                 expected the route path, e.g. `path: candidates/{id}`",
                "serverless.yml:18:15: functions.candidateList.events[4].http: expected `METHOD \
                 path` (e.g. `GET candidates`) or a map with path and method, found \"GET\"",
            ]),
        ),
        case(
            "duplicate route across functions (parameter names do not matter)",
            with_head(
                "
                |functions:
                |  a:
                |    handler: h.a
                |    events:
                |      - http: GET items/{id}
                |  b:
                |    handler: h.b
                |    events:
                |      - http: POST items/{id}
                |      - http:
                |          path: /items/{itemId}/
                |          method: get
                ",
            ),
            Expect::Err(&[
                "serverless.yml:14:9: functions.b.events[1].http: the route GET /items/{itemId} is \
                 already declared at functions.a.events[0].http (line 9); declare each method and \
                 path once",
            ]),
        ),
        case(
            "tlsConfig: API Gateway's insecureSkipVerification on an https upstream",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          integration: http-proxy
                |          request:
                |            uri: https://self-signed.internal/a
                |            tlsConfig:
                |              insecureSkipVerification: true
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(
                    l.definition.functions[0].events[0].integration,
                    Integration::HttpProxy {
                        uri: "https://self-signed.internal/a".into(),
                        insecure_skip_verification: true
                    }
                );
            }),
        ),
        case(
            "tlsConfig where it cannot apply, with an unknown key or a value that is no boolean",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          integration: http-proxy
                |          request:
                |            uri: http://plain.internal/a
                |            tlsConfig:
                |              insecureSkipVerification: true
                |      - http:
                |          path: b
                |          method: get
                |          integration: http-proxy
                |          request:
                |            uri: https://up.internal/b
                |            tlsConfig:
                |              insecureSkipVerifcation: true
                |              serverNameToVerify: up.internal
                |      - http:
                |          path: c
                |          method: get
                |          integration: http-proxy
                |          request:
                |            uri: https://up.internal/c
                |            tlsConfig:
                |              insecureSkipVerification: sometimes
                ",
            ),
            Expect::Err(&[
                "serverless.yml:16:41: functions.f.events[0].http.request.tlsConfig.\
                 insecureSkipVerification: tlsConfig applies only to an http-proxy integration \
                 whose request.uri starts with https://; remove it",
                "serverless.yml:24:15: functions.f.events[1].http.request.tlsConfig.\
                 insecureSkipVerifcation: unknown key in tlsConfig; did you mean \
                 `insecureSkipVerification`?",
                "serverless.yml:25:15: functions.f.events[1].http.request.tlsConfig.\
                 serverNameToVerify: unknown key in tlsConfig; keygate reads \
                 insecureSkipVerification here (and ignores the other keys Serverless defines): \
                 check the spelling, or pass --allow-unknown to ignore it",
                "serverless.yml:33:41: functions.f.events[2].http.request.tlsConfig.\
                 insecureSkipVerification: expected true or false (a YAML boolean, unquoted), \
                 found \"sometimes\"",
            ]),
        ),
        case(
            "unsupported integrations, missing uri, bad cors, mis-indented event settings",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          integration: lambda
                |      - http:
                |          path: b
                |          method: get
                |          integration: http
                |      - http:
                |          path: c
                |          method: get
                |          integration: http-proxy
                |      - http:
                |          path: d
                |          method: get
                |          cors:
                |            origin: '*'
                |            origins: ['*']
                |            credentials: true
                |      - http:
                |        path: e
                |        method: get
                ",
            ),
            Expect::Err(&[
                "serverless.yml:12:24: functions.f.events[0].http.integration: the `lambda` \
                 integration (non-proxy, with request and response templates) is not supported by \
                 keygate yet; use lambda-proxy (the default)",
                "serverless.yml:16:24: functions.f.events[1].http.integration: the `http` \
                 integration (non-proxy, with request and response templates) is not supported by \
                 keygate yet; use http-proxy",
                "serverless.yml:17:9: functions.f.events[2].http.request.uri: missing; an \
                 http-proxy integration needs `request: {uri: https://...}`",
                "serverless.yml:26:13: functions.f.events[3].http.cors.origins: use either \
                 origin or \
                 origins, not both (`origin` is already given)",
                "serverless.yml:27:13: functions.f.events[3].http.cors.credentials: unknown CORS \
                 setting `credentials`; expected origin, origins, headers, methods, \
                 allowCredentials, maxAge or cacheControl",
                "serverless.yml:28:9: functions.f.events[4]: one event has the keys http, path, \
                 method; put the http settings under `http:` (indent them further than `http`) and \
                 start each event with its own `-`",
            ]),
        ),
        case(
            "bad uri, private and cors values; an event that is not a map",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.h
                |    events:
                |      - http:
                |          path: a
                |          method: get
                |          integration: http_proxy
                |          request:
                |            uri: ftp://files.example/a
                |      - http:
                |          path: b
                |          method: get
                |          private: yes
                |          cors: [x]
                |      - http
                ",
            ),
            Expect::Err(&[
                "serverless.yml:14:18: functions.f.events[0].http.request.uri: expected a URL \
                 starting with http:// or https://, found \"ftp://files.example/a\"",
                "serverless.yml:18:20: functions.f.events[1].http.private: expected true or false \
                 (a YAML boolean, unquoted), or report, found \"yes\"",
                "serverless.yml:19:17: functions.f.events[1].http.cors: expected true, false or a \
                 map of CORS settings, found a list",
                "serverless.yml:20:9: functions.f.events[2]: expected an event such as `- http: \
                 GET candidates`, found \"http\"",
            ]),
        ),
    ]);
}

#[test]
fn functions_and_provider() {
    run(vec![
        case(
            "defaults, overrides, merges, artifacts, anchors",
            y("
                |service:
                |  name: svc
                |provider:
                |  name: aws
                |  runtime: nodejs20.x
                |  stage: test
                |  region: eu-west-1
                |  timeout: 20
                |  memorySize: 512
                |  environment:
                |    A: p
                |    B: p
                |custom:
                |  common: &common
                |    handler: h.common
                |    timeout: 10
                |functions:
                |  f:
                |    handler: h.f
                |    runtime: python3.12
                |    timeout: 900
                |    memorySize: 2048
                |    name: custom-name
                |    reservedConcurrency: 5
                |    environment:
                |      B: f
                |      C: 3
                |    package:
                |      artifact: ./dist/f.zip
                |      patterns: ['!node_modules/**']
                |  g:
                |    <<: *common
                |    package:
                |      artifact: /abs/g.zip
                |    events: [{http: GET f}]
            "),
            Expect::Ok(|l| {
                let d = &l.definition;
                assert_eq!((d.service.as_str(), d.stage.as_str()), ("svc", "test"));
                assert_eq!(d.region, "eu-west-1");
                let f = &d.functions[0];
                assert_eq!(f.function_name, "custom-name");
                assert_eq!(f.runtime, "python3.12");
                assert_eq!((f.timeout_secs, f.memory_size), (900, 2048));
                assert_eq!(f.reserved_concurrency, Some(5));
                let want: BTreeMap<String, String> =
                    [("A", "p"), ("B", "f"), ("C", "3")].map(|(k, v)| (k.into(), v.into())).into();
                assert_eq!(f.environment, want);
                assert_eq!(f.artifact, Some(PathBuf::from("/srv/app/dist/f.zip")));
                let g = &d.functions[1];
                assert_eq!(g.handler, "h.common");
                assert_eq!(g.function_name, "svc-test-g");
                assert_eq!(g.runtime, "nodejs20.x");
                assert_eq!((g.timeout_secs, g.memory_size), (10, 512));
                assert_eq!(g.artifact, Some(PathBuf::from("/abs/g.zip")));
                assert_eq!(l.notes, vec!["ignored (not used by keygate): custom"]);
            }),
        ),
        case(
            "capacityProvider makes a Lambda Managed Instances function",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided.al2023
                |  capacityProviders:
                |    big:
                |      scaling:
                |        maxVCpuCount: 100
                |functions:
                |  named:
                |    handler: h.a
                |    capacityProvider: big
                |  tuned:
                |    handler: h.b
                |    capacityProvider:
                |      name: big
                |      maxConcurrency: 32
                |      memoryPerVCpu: 4
                |  node:
                |    handler: h.c
                |    runtime: nodejs20.x
                |    capacityProvider: arn:aws:lambda:us-east-1:123456789012:capacity-provider:x
                |  classic:
                |    handler: h.d
                |    events: [{http: GET f}]
            "),
            Expect::Ok(|l| {
                let max: Vec<Option<u32>> =
                    l.definition.functions.iter().map(|f| f.max_concurrency).collect();
                assert_eq!(max, [Some(16), Some(32), Some(64), None]);
                assert_eq!(
                    l.notes,
                    vec![
                        "ignored (not used by keygate): provider.capacityProviders, \
                         functions.tuned.capacityProvider.memoryPerVCpu"
                    ]
                );
            }),
        ),
        case(
            "a bad capacityProvider says what is wrong",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided.al2023
                |functions:
                |  f:
                |    handler: h.f
                |    capacityProvider:
                |      maxConcurrency: 2000
            "),
            Expect::Err(&[
                "serverless.yml:9:7: functions.f.capacityProvider.name: missing; name the \
                 capacity provider (a key of provider.capacityProviders, or an ARN), e.g. `name: \
                 default`",
                "serverless.yml:9:23: functions.f.capacityProvider.maxConcurrency: expected a \
                 whole number from 1 to 1600, found 2000",
            ]),
        ),
        allowing(case(
            "--allow-unknown: ignored keys are listed in one note, unknown keys in another",
            y("
                |service: svc
                |frameworkVersion: '3'
                |plugins:
                |  - serverless-offline
                |provider:
                |  name: aws
                |  runtime: nodejs20.x
                |  iam:
                |    role: x
                |  apiGateway:
                |    apiKeySourceType: HEADER
                |  tags:
                |    a: b
                |custom:
                |  x: 1
                |resources:
                |  Resources: {}
                |functions:
                |  f:
                |    handler: h.h
                |    layers: [x]
                |    hanlder: typo
                |  g:
                |    handler: h.g
                |    layers: [y]
                |    events: [{http: GET g}]
                |fucntions: {}
            "),
            Expect::Ok(|l| {
                assert_eq!(
                    l.notes,
                    vec![
                        "ignored (not used by keygate): frameworkVersion, plugins, custom, \
                         provider.iam, provider.tags, \
                         functions.f.layers, functions.g.layers",
                        "not recognised, so ignored (check the spelling): fucntions (did you \
                         mean `functions`?), functions.f.hanlder (did you mean `handler`?)",
                    ]
                );
            }),
        )),
        case(
            "missing handler and runtime, bad numbers, reservedConcurrency 0, bad names",
            y("
                |service: svc
                |provider:
                |  name: aws
                |functions:
                |  f:
                |    runtime: nodejs20.x
                |  g:
                |    handler: h.g
                |    timeout: 901
                |    memorySize: 1.5
                |    reservedConcurrency: 0
                |  bad name:
                |    handler: h.b
                |    runtime: provided
            "),
            Expect::Err(&[
                "serverless.yml:5:3: functions.f.handler: missing; every function needs a handler, \
                 e.g. `handler: api/candidates.submit`",
                "serverless.yml:7:3: functions.g.runtime: missing; set provider.runtime or \
                 functions.g.runtime (e.g. provided.al2023)",
                "serverless.yml:9:14: functions.g.timeout: expected a timeout in whole seconds \
                 from \
                 1 to 900, found 901",
                "serverless.yml:10:17: functions.g.memorySize: expected a memory size in MB from \
                 128 \
                 to 10240, found 1.5",
                "serverless.yml:11:26: functions.g.reservedConcurrency: 0 would disable the \
                 function \
                 (every invocation is throttled); remove reservedConcurrency or set it to at least \
                 1",
                "serverless.yml:12:3: functions.bad name: \"bad name\" is not a valid function \
                 name; \
                 use letters, digits, `-` and `_`",
            ]),
        ),
        case(
            "service and provider problems",
            y("
                |service: 1bad
                |provider:
                |  name: azure
                |  stage: 'my stage'
                |  environment:
                |    1X: y
                |    Y: [a]
            "),
            Expect::Err(&[
                "serverless.yml:1:10: service: expected a service name of letters, digits and `-` \
                 that starts with a letter, found \"1bad\"",
                "serverless.yml:3:9: provider.name: expected \"aws\", found \"azure\"; keygate \
                 runs \
                 AWS-style (Lambda and API Gateway) services only",
                "serverless.yml:4:10: provider.stage: expected a stage name of letters, digits, \
                 `-` \
                 and `_`, found \"my stage\"",
                "serverless.yml:6:5: provider.environment.1X: \"1X\" is not a valid environment \
                 variable name; use letters, digits and `_`, starting with a letter",
                "serverless.yml:7:8: provider.environment.Y: expected a string, number or boolean, \
                 found a list",
            ]),
        ),
        staged(
            "a/b",
            case(
                "a --stage that cannot name a stage",
                with_head("|functions: {}"),
                Expect::Err(&[
                    "serverless.yml:1:1: --stage: expected a stage name of letters, digits, `-` \
                     and `_`, found \"a/b\"",
                ]),
            ),
        ),
        case(
            "missing service and provider",
            y("|functions: {}"),
            Expect::Err(&[
                "serverless.yml:1:1: service: missing; name the service, e.g. `service: \
                 candidate-service`",
                "serverless.yml:1:1: provider: missing; expected `provider:` with `name: aws`",
            ]),
        ),
        case(
            "top level is not a map",
            y("
                |- a
                |- b
            "),
            Expect::Err(&[
                "serverless.yml:1:1: expected the service settings as a map (service, provider, \
                 functions, ...), found a list",
            ]),
        ),
        case(
            "empty file",
            y("|# nothing"),
            Expect::Err(&[
                "serverless.yml:1:1: the file is empty; expected service, provider and functions",
            ]),
        ),
        case(
            "broken YAML",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: [nodejs20.x
                |functions: {}
            "),
            Expect::Err(&["serverless.yml:5:10: invalid YAML: illegal placement of ':' indicator"]),
        ),
        case(
            "duplicate YAML keys and CloudFormation functions",
            with_head(
                "
                |  environment:
                |    T: !Ref Table
                |    U:
                |      Fn::GetAtt: [T, Arn]
                |  runtime: x
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:13: provider.environment.T: no DynamoDB table \"Table\" in \
                 resources.Resources; keygate resolves Ref and Fn::GetAtt to its tables only",
                "serverless.yml:8:7: provider.environment.U: no DynamoDB table \"T\" in \
                 resources.Resources; keygate resolves Ref and Fn::GetAtt to its tables only",
                "serverless.yml:9:3: provider.runtime: duplicate key `runtime` (first defined on \
                 line 4); keep only one",
            ]),
        ),
    ]);
}

#[test]
fn api_keys() {
    let mut cases = vec![
        case(
            "name and object forms under apiGateway, no usage plan",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - plain-name
                |      - name: full
                |        value: ${env:KEY_VALUE}
                |        description: the full one
                |        customerId: cust-1
                |        enabled: false
                |      - value: AnotherValueOf20Chars
                ",
            ),
            Expect::Ok(|l| {
                let d = &l.definition;
                let keys = &d.api_keys;
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                assert_eq!(names, vec!["plain-name", "full", "svc-dev-key3"]);
                let full = &keys[1];
                assert_eq!(full.value.as_ref().unwrap().expose(), SECRET);
                assert_eq!(full.description.as_deref(), Some("the full one"));
                assert_eq!(full.customer_id.as_deref(), Some("cust-1"));
                assert!(!full.enabled);
                assert!(keys[0].enabled && keys[0].value.is_none());
                assert!(keys.iter().all(|k| k.usage_plan.is_none()));
                assert!(d.usage_plans.is_empty());
                assert_eq!(
                    l.notes,
                    vec![
                        "API keys without a name (provider.apiGateway.apiKeys[2]) are named \
                         <service>-<stage>-key<N> by their position; give them a name so \
                         reordering the list does not rename them",
                    ]
                );
            }),
        ),
        case(
            "bad values, duplicates, unknown properties: no value in any message",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - name: short
                |        value: abcde
                |      - name: dashed
                |        value: SuperSecretKeyValue-0123456789
                |      - name: one
                |        value: SuperSecretKeyValue0123456789
                |      - name: two
                |        value: ${env:KEY_VALUE}
                |      - one
                |      - name: x
                |        valu: SuperSecretKeyValue0123456789
                |      - name: y
                |        value: [SuperSecretKeyValue0123456789]
                |      - name: z
                |        value: ${env:MISSING, 'SuperSecretKeyValue0123456789'} ${ssm:/x}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:8:16: provider.apiGateway.apiKeys[0].value: an API key value \
                 must be \
                 20 to 128 characters long, this one has 5",
                "serverless.yml:10:16: provider.apiGateway.apiKeys[1].value: an API key value may \
                 contain only letters A-Z, a-z and digits 0-9; character 20 is not one of them",
                "serverless.yml:14:16: provider.apiGateway.apiKeys[3].value: this key has the same \
                 value as provider.apiGateway.apiKeys[2]; every key needs its own value",
                "serverless.yml:15:9: provider.apiGateway.apiKeys[4]: the API key name \"one\" is \
                 already used by provider.apiGateway.apiKeys[2]; key names must be unique",
                "serverless.yml:17:9: provider.apiGateway.apiKeys[5].valu: unknown API key \
                 property \
                 \"valu\"; did you mean `value`? a key has only name, value, description, \
                 customerId and enabled",
                "serverless.yml:19:16: provider.apiGateway.apiKeys[6].value: expected the key \
                 value \
                 as a string, found a list",
                "serverless.yml:21:16: provider.apiGateway.apiKeys[7].value: keygate does not \
                 support the `ssm:` variable source yet; use a literal value or ${env:NAME} \
                 instead",
            ]),
        ),
        case(
            "both the deprecated and the current key lists",
            with_head(
                "
                |  apiKeys:
                |    - a
                |  apiGateway:
                |    apiKeys:
                |      - b
                ",
            ),
            Expect::Err(&[
                "serverless.yml:5:3: provider.apiKeys: API keys are declared both here and under \
                 provider.apiGateway.apiKeys; keep only provider.apiGateway.apiKeys",
            ]),
        ),
    ];
    for c in &mut cases {
        c.env = &[("KEY_VALUE", SECRET)];
    }
    run(cases);
}

fn plan(l: &Loaded, i: usize) -> &UsagePlanDecl {
    &l.definition.usage_plans[i]
}

/// (key name, usage plan) of every key.
fn key_plans(l: &Loaded) -> Vec<(&str, Option<&str>)> {
    l.definition.api_keys.iter().map(|k| (k.name.as_str(), k.usage_plan.as_deref())).collect()
}

#[test]
fn usage_plans() {
    let list_form = "
        |  apiGateway:
        |    apiKeys:
        |      - free:
        |          - free-key
        |          - name: free-2
        |            value: ${env:KEY_VALUE}
        |      - paid:
        |          - paid-key
        |      - free:
        |          - free-3
        |    usagePlan:
        |      - free:
        |          quota: {limit: 5000, period: MONTH}
        |          throttle: {burstLimit: 1, rateLimit: 0.5}
        |      - paid:
        |          quota:
        |            limit: ${self:custom.paidLimit}
        |            period: ${env:PERIOD, 'week'}
        |            offset: ${env:OFFSET, '1'}
        |          throttle:
        |            rateLimit: ${env:RATE, '5'}
        |            burstLimit: ${env:BURST, '10'}
        |      - internal:
        |custom:
        |  paidLimit: '50000'
        ";
    let mut cases = vec![
        case(
            "single form: one plan named <service>-<stage>, keys ungrouped",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - k1
                |      - name: k2
                |        value: ${env:KEY_VALUE}
                |    usagePlan:
                |      quota:
                |        limit: 5000
                |        offset: 2
                |        period: month
                |      throttle:
                |        burstLimit: 200
                |        rateLimit: 100
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(
                    l.definition.usage_plans,
                    vec![UsagePlanDecl {
                        name: "svc-dev".into(),
                        short_name: None,
                        throttle: Some(Throttle { rate_limit: 100.0, burst_limit: 200 }),
                        quota: Some(Quota { limit: 5000, period: QuotaPeriod::Month, offset: 2 }),
                        fallback: None,
                    }]
                );
                assert_eq!(key_plans(l), vec![("k1", None), ("k2", None)]);
                assert!(l.notes.is_empty(), "{:?}", l.notes);
            }),
        ),
        case(
            "single form with only a throttle; quota offset defaults to 0",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      throttle: {rateLimit: 0.25, burstLimit: 0}
                |      quota: {limit: 0, period: DAY}
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(
                    plan(l, 0).throttle,
                    Some(Throttle { rate_limit: 0.25, burst_limit: 0 })
                );
                assert_eq!(
                    plan(l, 0).quota,
                    Some(Quota { limit: 0, period: QuotaPeriod::Day, offset: 0 })
                );
                assert!(l.definition.api_keys.is_empty());
            }),
        ),
        case(
            "custom.keygate says each plan's policy while Redis does not answer",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      - free:
                |          throttle: {burstLimit: 1, rateLimit: 0.5}
                |      - paid:
                |          quota: {limit: 10, period: DAY}
                |      - internal:
                |custom:
                |  otherPlugin: {x: 1}
                |  keygate:
                |    redisUnavailable:
                |      paid: refuse
                |      free: local
                ",
            ),
            Expect::Ok(|l| {
                use keygate_types::plan::Fallback;
                let policies: Vec<Option<Fallback>> =
                    l.definition.usage_plans.iter().map(|p| p.fallback).collect();
                assert_eq!(policies, [Some(Fallback::Local), Some(Fallback::Refuse), None]);
                assert_eq!(l.notes, ["ignored (not used by keygate): custom.otherPlugin"]);
            }),
        ),
        case(
            "custom.keygate's one policy for every plan",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      quota: {limit: 10, period: DAY}
                |custom:
                |  keygate:
                |    redisUnavailable: refuse
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(plan(l, 0).fallback, Some(keygate_types::plan::Fallback::Refuse));
            }),
        ),
        case(
            "custom.keygate's mistakes",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      - free:
                |          quota: {limit: 10, period: DAY}
                |custom:
                |  keygate:
                |    redisUnavailible: refuse
                |    redisUnavailable:
                |      gold: refuse
                |      free: maybe
                ",
            ),
            Expect::Err(&[
                "serverless.yml:11:5: custom.keygate.redisUnavailible: unknown key in \
                 custom.keygate (did you mean `redisUnavailable`?); expected one of \
                 enforcement, keyIntrospection, redisUnavailable",
                "serverless.yml:13:7: custom.keygate.redisUnavailable.gold: no usage plan named \
                 \"gold\" in provider.apiGateway.usagePlan (it has free)",
                "serverless.yml:14:13: custom.keygate.redisUnavailable.free: expected local or \
                 refuse, found \"maybe\"",
            ]),
        ),
        case(
            "key introspection is off unless custom.keygate turns it on",
            with_head("|  stage: dev\n"),
            Expect::Ok(|l| assert_eq!(l.definition.key_introspection, None)),
        ),
        case(
            "keyIntrospection: true answers on the default path",
            with_head("|custom:\n|  keygate:\n|    keyIntrospection: true\n"),
            Expect::Ok(|l| {
                assert_eq!(l.definition.key_introspection.as_deref(), Some("/.keygate/key"));
            }),
        ),
        case(
            "keyIntrospection: a path of its own, or false, also from a variable",
            with_head(
                "
                |custom:
                |  on: {dev: /me/key, prod: false}
                |  keygate:
                |    keyIntrospection: ${self:custom.on.${sls:stage}}
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(l.definition.key_introspection.as_deref(), Some("/me/key"));
            }),
        ),
        staged(
            "prod",
            case(
                "keyIntrospection: false from a variable",
                with_head(
                    "
                    |custom:
                    |  on: {dev: /me/key, prod: false}
                    |  keygate:
                    |    keyIntrospection: ${self:custom.on.${sls:stage}}
                    ",
                ),
                Expect::Ok(|l| assert_eq!(l.definition.key_introspection, None)),
            ),
        ),
        case(
            "keyIntrospection's mistakes: not a literal path, a route's path, not a path at all",
            with_head(
                "
                |custom:
                |  keygate:
                |    keyIntrospection: /keys/{id}
                |functions:
                |  a:
                |    handler: a.h
                |    events:
                |      - http: GET me/key
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:23: custom.keygate.keyIntrospection: expected true, false or a \
                 path such as /.keygate/key (a literal path: letters, digits, `-._~` and `/`, \
                 starting with `/`, no `{parameters}`), found \"/keys/{id}\"",
            ]),
        ),
        case(
            "keyIntrospection on a route's own path",
            with_head(
                "
                |custom:
                |  keygate:
                |    keyIntrospection: /me/key
                |functions:
                |  a:
                |    handler: a.h
                |    events:
                |      - http: GET me/key
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:23: custom.keygate.keyIntrospection: key introspection's path \
                 \"/me/key\" is also a route of the service (GET /me/key): choose another path, \
                 e.g. `keyIntrospection: /.keygate/key`",
            ]),
        ),
        case(
            "keyIntrospection: neither a boolean nor a path",
            with_head("|custom:\n|  keygate:\n|    keyIntrospection: 3\n"),
            Expect::Err(&[
                "serverless.yml:7:23: custom.keygate.keyIntrospection: expected true, false or a \
                 path such as /.keygate/key, found 3",
            ]),
        ),
        case(
            "list form: named plans, grouped keys, fractional rate, numbers as strings",
            with_head(list_form),
            Expect::Ok(|l| {
                let d = &l.definition;
                let names: Vec<(&str, Option<&str>)> = d
                    .usage_plans
                    .iter()
                    .map(|p| (p.name.as_str(), p.short_name.as_deref()))
                    .collect();
                assert_eq!(
                    names,
                    vec![
                        ("svc-free-dev", Some("free")),
                        ("svc-paid-dev", Some("paid")),
                        ("svc-internal-dev", Some("internal")),
                    ]
                );
                assert_eq!(plan(l, 0).throttle, Some(Throttle { rate_limit: 0.5, burst_limit: 1 }));
                assert_eq!(
                    plan(l, 0).quota,
                    Some(Quota { limit: 5000, period: QuotaPeriod::Month, offset: 0 })
                );
                // RATE comes from the environment ("2.5"), the rest from quoted fallbacks and a
                // quoted custom value: strings that parse as numbers.
                assert_eq!(
                    plan(l, 1).throttle,
                    Some(Throttle { rate_limit: 2.5, burst_limit: 10 })
                );
                assert_eq!(
                    plan(l, 1).quota,
                    Some(Quota { limit: 50000, period: QuotaPeriod::Week, offset: 1 })
                );
                assert_eq!((plan(l, 2).throttle, plan(l, 2).quota), (None, None));
                assert_eq!(
                    key_plans(l),
                    vec![
                        ("free-key", Some("free")),
                        ("free-2", Some("free")),
                        ("paid-key", Some("paid")),
                        ("free-3", Some("free")),
                    ]
                );
                assert_eq!(d.api_keys[1].value.as_ref().unwrap().expose(), SECRET);
                // The deployment snapshot's shape.
                assert_eq!(
                    serde_json::to_value(&d.usage_plans[1]).unwrap(),
                    serde_json::json!({
                        "name": "svc-paid-dev",
                        "shortName": "paid",
                        "throttle": {"rateLimit": 2.5, "burstLimit": 10},
                        "quota": {"limit": 50000, "period": "WEEK", "offset": 1},
                    })
                );
                assert_eq!(l.notes, vec!["ignored (not used by keygate): custom"]);
            }),
        ),
        staged(
            "prod",
            case(
                "list form with --stage prod",
                with_head(list_form),
                Expect::Ok(|l| {
                    let names: Vec<&str> =
                        l.definition.usage_plans.iter().map(|p| p.name.as_str()).collect();
                    assert_eq!(names, vec!["svc-free-prod", "svc-paid-prod", "svc-internal-prod"]);
                }),
            ),
        ),
        case(
            "deprecated provider.usagePlan and provider.apiKeys",
            with_head(
                "
                |  apiKeys:
                |    - gold:
                |        - g1
                |  usagePlan:
                |    - gold:
                |        throttle: {rateLimit: 10, burstLimit: 20}
                ",
            ),
            Expect::Ok(|l| {
                assert_eq!(plan(l, 0).name, "svc-gold-dev");
                assert_eq!(
                    plan(l, 0).throttle,
                    Some(Throttle { rate_limit: 10.0, burst_limit: 20 })
                );
                assert_eq!(key_plans(l), vec![("g1", Some("gold"))]);
                assert_eq!(
                    l.notes,
                    vec![
                        "provider.apiKeys is deprecated: move it under provider.apiGateway.apiKeys \
                         (Serverless v3 removed provider.apiKeys; keygate still accepts it)",
                        "provider.usagePlan is deprecated: move it under \
                         provider.apiGateway.usagePlan (Serverless v3 removed provider.usagePlan; \
                         keygate still accepts it)",
                    ]
                );
            }),
        ),
        case(
            "no plans declared: an empty usagePlan, ungrouped keys",
            with_head(
                "
                |  apiGateway:
                |    apiKeys: [a, b]
                |    usagePlan:
                ",
            ),
            Expect::Ok(|l| {
                assert!(l.definition.usage_plans.is_empty());
                assert_eq!(key_plans(l), vec![("a", None), ("b", None)]);
            }),
        ),
        case(
            "no plans declared: an empty list",
            with_head(
                "
                |  apiGateway:
                |    apiKeys: [a]
                |    usagePlan: []
                ",
            ),
            Expect::Ok(|l| assert!(l.definition.usage_plans.is_empty())),
        ),
        case(
            "single form: bad values and an unknown property",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      quota:
                |        limit: -1
                |        offset: 7
                |        period: WEEK
                |      throttle:
                |        rateLimit: fast
                |        burstLimit: 1.5
                |      quotas: {}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:8:16: provider.apiGateway.usagePlan.quota.limit: expected a whole \
                 number of requests of at least 0, found -1",
                "serverless.yml:9:17: provider.apiGateway.usagePlan.quota.offset: expected an \
                 offset from 0 to 6 for a WEEK quota, found 7; for WEEK the offset is the weekday \
                 the week starts (0 = Sunday .. 6 = Saturday)",
                "serverless.yml:12:20: provider.apiGateway.usagePlan.throttle.rateLimit: expected \
                 a number of requests per second of at least 0 (fractions such as 0.5 are \
                 allowed), found \"fast\"",
                "serverless.yml:13:21: provider.apiGateway.usagePlan.throttle.burstLimit: \
                 expected a whole number of requests from 0 to 4294967295, found 1.5",
                "serverless.yml:14:7: provider.apiGateway.usagePlan.quotas: unknown usage plan \
                 property \"quotas\"; a usage plan has only quota and throttle (did you mean \
                 `quota`?)",
            ]),
        ),
        case(
            "single form: missing quota and throttle fields",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      quota: {offset: 0}
                |      throttle: {rateLimit: 5}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:7: provider.apiGateway.usagePlan.quota.limit: missing; a quota \
                 needs limit, the number of requests allowed per period",
                "serverless.yml:7:7: provider.apiGateway.usagePlan.quota.period: missing; a quota \
                 needs period: DAY, WEEK or MONTH",
                "serverless.yml:8:7: provider.apiGateway.usagePlan.throttle.burstLimit: missing; \
                 a throttle needs both rateLimit (the steady rate, in requests per second) and \
                 burstLimit (how many requests may arrive at once); keygate does not guess one \
                 from the other",
            ]),
        ),
        case(
            "a map of plans without the list, and a usagePlan that is not a map or list",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      free:
                |        quota: {limit: 1, period: DAY}
                |  usagePlan: monthly
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:7: provider.apiGateway.usagePlan.free: unknown usage plan \
                 property \"free\"; a usage plan has only quota and throttle (to declare named \
                 plans, write a list: `- free: {quota: ..., throttle: ...}`)",
                "serverless.yml:9:3: provider.usagePlan: a usage plan is declared both here and \
                 under provider.apiGateway.usagePlan; keep only provider.apiGateway.usagePlan",
            ]),
        ),
        case(
            "a usagePlan that is neither a map nor a list",
            with_head("|  usagePlan: monthly"),
            Expect::Err(&[
                "serverless.yml:5:14: provider.usagePlan: expected a usage plan (a map with quota \
                 and throttle) or a list of named plans (e.g. `- free: {quota: {limit: 1000, \
                 period: MONTH}}`), found \"monthly\"",
            ]),
        ),
        case(
            "list form: plan names",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      - free: {}
                |      - free: {}
                |      - '': {}
                |      - quota: {limit: 5, period: DAY}
                |      - a: {}
                |        b: {}
                |      - quota: {limit: 5, period: DAY}
                |        throttle: {rateLimit: 1, burstLimit: 1}
                |      - {}
                |      - [x]
                ",
            ),
            Expect::Err(&[
                "serverless.yml:8:9: provider.apiGateway.usagePlan[1].free: the usage plan \
                 \"free\" is already declared at provider.apiGateway.usagePlan[0]; plan names \
                 must be unique",
                "serverless.yml:9:9: provider.apiGateway.usagePlan[2]: a usage plan name cannot \
                 be empty; name the plan, e.g. `- free: {...}`",
                "serverless.yml:10:9: provider.apiGateway.usagePlan[3].quota: \"quota\" is a \
                 usage plan setting, not a plan name; for one plan without a name write \
                 usagePlan as a map `{quota, throttle}` (without `-`), for named plans write `- \
                 free: {quota: ..., throttle: ...}`",
                "serverless.yml:11:9: provider.apiGateway.usagePlan[4]: each item names one plan \
                 (`- free: {quota: ..., throttle: ...}`), this one has the keys a, b",
                "serverless.yml:13:9: provider.apiGateway.usagePlan[5]: each item names one plan \
                 (`- free: {quota: ..., throttle: ...}`), this one has the keys quota, throttle; \
                 for one plan without a name, write usagePlan as a map (without `-`)",
                "serverless.yml:15:9: provider.apiGateway.usagePlan[6]: expected a named plan \
                 such as `free: {quota: ..., throttle: ...}`, found nothing",
                "serverless.yml:16:9: provider.apiGateway.usagePlan[7]: expected a named plan \
                 such as `free: {quota: ..., throttle: ...}`, found a list",
            ]),
        ),
        case(
            "list form: settings",
            with_head(
                "
                |  apiGateway:
                |    usagePlan:
                |      - free:
                |          quota: {limit: 10}
                |          throttle: {rateLimit: 5}
                |      - paid:
                |          quota: {limit: 10, period: YEAR, offset: 1}
                |          throttle: {rateLimit: .nan, burstLimit: 5, burst: 1}
                |      - gold:
                |          quota: {limit: 1, period: day, offset: 1}
                |          throttle: {rateLimit: -0.5, burstLimit: -1}
                |      - silver:
                |          quota: {limit: 1, period: Month, offset: 28}
                |          quota2: x
                |      - bronze:
                |          quota: {limit: 1, period: WEEK, offset: \"${env:OFFSET, '-1'}\"}
                |          throttle: {rateLimit: '${env:RATE, 1} per second', burstLimit: 1}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:8:11: provider.apiGateway.usagePlan[0].free.quota.period: \
                 missing; a quota needs period: DAY, WEEK or MONTH",
                "serverless.yml:9:11: provider.apiGateway.usagePlan[0].free.throttle.burstLimit: \
                 missing; a throttle needs both rateLimit (the steady rate, in requests per \
                 second) and burstLimit (how many requests may arrive at once); keygate does not \
                 guess one from the other",
                "serverless.yml:11:38: provider.apiGateway.usagePlan[1].paid.quota.period: \
                 expected DAY, WEEK or MONTH, found \"YEAR\"",
                "serverless.yml:12:33: provider.apiGateway.usagePlan[1].paid.throttle.rateLimit: \
                 expected a number of requests per second of at least 0 (fractions such as 0.5 \
                 are allowed), found .nan",
                "serverless.yml:12:54: provider.apiGateway.usagePlan[1].paid.throttle.burst: \
                 unknown throttle setting \"burst\"; a throttle has only rateLimit and burstLimit",
                "serverless.yml:14:50: provider.apiGateway.usagePlan[2].gold.quota.offset: \
                 expected offset 0 for a DAY quota, found 1; a day has no offset (it starts at \
                 00:00 UTC)",
                "serverless.yml:15:33: provider.apiGateway.usagePlan[2].gold.throttle.rateLimit: \
                 expected a number of requests per second of at least 0 (fractions such as 0.5 \
                 are allowed), found -0.5",
                "serverless.yml:15:51: provider.apiGateway.usagePlan[2].gold.throttle.burstLimit: \
                 expected a whole number of requests from 0 to 4294967295, found -1",
                "serverless.yml:17:52: provider.apiGateway.usagePlan[3].silver.quota.offset: \
                 expected an offset from 0 to 27 for a MONTH quota, found 28; for MONTH the \
                 offset is the number of days after the 1st that the period starts (0-27)",
                "serverless.yml:18:11: provider.apiGateway.usagePlan[3].silver.quota2: unknown \
                 usage plan property \"quota2\"; a usage plan has only quota and throttle (did \
                 you mean `quota`?)",
                "serverless.yml:20:51: provider.apiGateway.usagePlan[4].bronze.quota.offset: \
                 expected a whole number of at least 0, found \"-1\"",
                "serverless.yml:21:33: provider.apiGateway.usagePlan[4].bronze.throttle.rateLimit: \
                 expected a number of requests per second of at least 0 (fractions such as 0.5 \
                 are allowed), found \"2.5 per second\"",
            ]),
        ),
        case(
            "key groups naming no plan; ungrouped keys with a list of plans",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - free:
                |          - a
                |      - gold:
                |          - b
                |      - c
                |      - name: d
                |        value: ${env:KEY_VALUE}
                |    usagePlan:
                |      - free: {}
                |      - paid: {}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:9:9: provider.apiGateway.apiKeys[1].gold: API key group \"gold\" \
                 names no usage plan; declared plans: free, paid",
                "serverless.yml:11:9: provider.apiGateway.apiKeys[2]: this key is not listed \
                 under a usage plan, but provider.apiGateway.usagePlan declares named plans \
                 (free, paid); a key may belong to only one plan per API stage, so list each key \
                 under its plan, e.g. `- free: [...]`",
                "serverless.yml:12:9: provider.apiGateway.apiKeys[3]: this key is not listed \
                 under a usage plan, but provider.apiGateway.usagePlan declares named plans \
                 (free, paid); a key may belong to only one plan per API stage, so list each key \
                 under its plan, e.g. `- free: [...]`",
            ]),
        ),
        case(
            "a name and a value written as a group: the value is not shown",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - free: SuperSecretKeyValue0123456789
                |    usagePlan:
                |      - free: {}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:15: provider.apiGateway.apiKeys[0].free: expected a list of the \
                 plan's API keys, found a string; a key with a value is written `- name: ...` \
                 with `value: ...` on the next line",
            ]),
        ),
        case(
            "key groups with the single form",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - free:
                |          - a
                |    usagePlan:
                |      quota: {limit: 1, period: DAY}
                ",
            ),
            Expect::Err(&[
                "serverless.yml:7:9: provider.apiGateway.apiKeys[0].free: API key group \"free\" \
                 names no usage plan; provider.apiGateway.usagePlan declares one plan without a \
                 name; to group keys, declare named plans as a list, e.g. `- free: {quota: ..., \
                 throttle: ...}`",
            ]),
        ),
        case(
            "key groups without usagePlan (deprecated keys: the message names the current place)",
            with_head(
                "
                |  apiKeys:
                |    - free: [a]
                ",
            ),
            Expect::Err(&[
                "serverless.yml:6:7: provider.apiKeys[0].free: API key group \"free\" names no \
                 usage plan; no usage plans are declared; declare named plans as a list under \
                 provider.apiGateway.usagePlan, e.g. `- free: {quota: ..., throttle: ...}`",
            ]),
        ),
        case(
            "a plan that cannot be read is not reported again by the key groups",
            with_head(
                "
                |  apiGateway:
                |    apiKeys:
                |      - free: [a]
                |    usagePlan:
                |      - ${env:PLAN}
                ",
            ),
            Expect::Err(&["serverless.yml:9:9: provider.apiGateway.usagePlan[0]: cannot resolve \
                 ${env:PLAN}: environment variable PLAN is not set; set it or give a default: \
                 ${env:PLAN, 'value'}"]),
        ),
    ];
    for c in &mut cases {
        c.env = &[("KEY_VALUE", SECRET), ("RATE", "2.5")];
    }
    run(cases);
}

#[test]
fn many_independent_errors_are_collected_in_file_order() {
    let yml = with_head(
        "
        |functions:
        |  a:
        |    events:
        |      - http: FETCH x
        |  b:
        |    handler: ${env:NOPE}
        |    timeout: 0
        ",
    );
    let e = load_case(&case("many", yml, Expect::Err(&[]))).unwrap_err();
    let got: Vec<(usize, usize, &str)> =
        e.diagnostics().iter().map(|d| (d.line, d.column, d.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (6, 3, "functions.a.handler"),
            (8, 15, "functions.a.events[0].http"),
            (10, 14, "functions.b.handler"),
            (11, 14, "functions.b.timeout"),
        ]
    );
    assert!(e.diagnostics().iter().all(|d| d.file == "serverless.yml"));
}

#[test]
fn load_reads_a_file_and_resolves_paths_against_its_directory() {
    let dir = std::env::temp_dir().join(format!("keygate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("serverless.yml");
    let yml = with_head(
        "
        |functions:
        |  f:
        |    handler: h.h
        |    events: [{http: GET f}]
        |    package:
        |      artifact: build/../build/f.zip
        ",
    );
    std::fs::write(&file, yml).unwrap();
    let none = |_: &str| None;
    let opts =
        LoadOptions { stage: Some("prod".into()), region: None, env: &none, allow_unknown: false };
    let loaded = load(&file, &opts).unwrap();
    assert_eq!(loaded.definition.base_dir, dir);
    assert_eq!(loaded.definition.stage, "prod");
    assert_eq!(loaded.definition.functions[0].artifact, Some(dir.join("build/f.zip")));

    std::fs::write(&file, "service: svc\nprovider: [\n").unwrap();
    let e = load(&file, &opts).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3:1: invalid YAML", file.display())), "{e}");

    let missing = dir.join("nope.yml");
    let e = load(&missing, &opts).unwrap_err();
    assert!(matches!(e, Error::Read { .. }));
    assert!(e.to_string().starts_with(&format!("cannot read {}", missing.display())));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The example service in this repository (the seed's API as Rust functions) loads as is.
#[test]
fn the_example_service_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/candidate-service/serverless.yml");
    if !path.exists() {
        return;
    }
    let none = |_: &str| None;
    let opts = LoadOptions { stage: None, region: None, env: &none, allow_unknown: false };
    let loaded = load(&path, &opts).unwrap_or_else(|e| panic!("{e}"));
    let d = &loaded.definition;
    assert_eq!(d.service, "candidate-service");
    assert!(!d.functions.is_empty());
    assert!(d.functions.iter().flat_map(|f| &f.events).all(|e| e.private));
    assert!(d.functions.iter().all(|f| f.artifact.as_ref().is_some_and(|a| a.is_absolute())));
}

/// The diagnostics of a text that must not load, as rendered lines.
fn refused(yml: &str) -> Vec<String> {
    let none = |_: &str| None;
    let opts = LoadOptions { stage: None, region: None, env: &none, allow_unknown: false };
    match load_str("serverless.yml", yml, Path::new("/srv/app"), &opts) {
        Ok(l) => panic!("loaded: {l:#?}"),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    }
}

/// A service whose one route is private: `private: true` is the last line.
fn private_service() -> String {
    with_head(
        "
        |functions:
        |  f:
        |    handler: h.f
        |    events:
        |      - http:
        |          path: secret
        |          method: get
        |          private: true
        ",
    )
}

/// Issue 12 finding 4: a NUL ended the document where it stood, so the `private: true` after it
/// was dropped and the route deployed public. Now the file is refused at the NUL.
#[test]
fn control_characters_are_refused_before_parsing() {
    let yml = private_service().replace("          private: true", "\0         private: true");
    assert_eq!(
        refused(&yml),
        vec![
            "serverless.yml:12:1: the control character U+0000 (NUL) is not allowed in \
             serverless.yml; remove it (YAML allows only tab, line feed and carriage return; a \
             NUL would end the document early and drop what follows)"
        ]
    );
    // Anywhere: in a value, a comment, a key; and it is counted when there are more.
    let yml = private_service().replace("h.f", "h.f # \u{1b}[31m\u{7}");
    assert_eq!(
        refused(&yml),
        vec![
            "serverless.yml:7:20: the control character U+001B (ESC) is not allowed in \
             serverless.yml (and 1 more after it); remove it (YAML allows only tab, line feed \
             and carriage return; a NUL would end the document early and drop what follows)"
        ]
    );
    let yml = private_service().replace("path: secret", "path: sec\u{85}ret");
    assert!(refused(&yml)[0].starts_with("serverless.yml:10:20: the control character U+0085"));
    // Tabs, CRLF line ends and a UTF-8 byte order mark are fine.
    let yml = format!("\u{FEFF}{}", private_service().replace('\n', "\r\n"))
        .replace("description", "description:\tx");
    let none = |_: &str| None;
    let opts = LoadOptions { stage: None, region: None, env: &none, allow_unknown: false };
    let loaded = load_str("serverless.yml", &yml, Path::new("/srv/app"), &opts).unwrap();
    assert!(loaded.definition.functions[0].events[0].private);
}

/// Issue 12 finding 4, for files: another encoding's byte order mark, invalid UTF-8 (with its
/// position) and a NUL are refused before parsing.
#[test]
fn files_in_other_encodings_are_refused_with_a_position() {
    let dir = std::env::temp_dir().join(format!("keygate-config-enc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("serverless.yml");
    let none = |_: &str| None;
    let opts = LoadOptions { stage: None, region: None, env: &none, allow_unknown: false };
    let name = file.display().to_string();
    let refused = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        load(&file, &opts).unwrap_err().to_string()
    };
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(private_service().encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert_eq!(
        refused(&utf16),
        format!(
            "{name}:1:1: the file is encoded as UTF-16 (little-endian) (it starts with that byte \
             order mark); save it as UTF-8"
        )
    );
    let mut latin1 = private_service().into_bytes();
    let at = latin1.windows(3).position(|w| w == b"h.f").unwrap();
    latin1[at + 1] = 0xE9;
    assert_eq!(
        refused(&latin1),
        format!("{name}:7:15: invalid UTF-8 (byte 0xE9); save the file as UTF-8")
    );
    let nul = private_service().replace("          private: true", "\0         private: true");
    assert!(refused(nul.as_bytes()).starts_with(&format!("{name}:12:1: the control character")));
    // Over the size limit: refused without reading the whole file.
    let big = format!("{}# {}\n", private_service(), "x".repeat(2 * 1024 * 1024));
    assert_eq!(
        refused(big.as_bytes()),
        format!(
            "{name}:14:{}: the file is larger than 1024 KiB, the most keygate reads; a \
             serverless.yml this large is not a service definition (split it, or remove what \
             keygate does not use)",
            1024 * 1024 - private_service().len() + 1
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12 finding 5: a document over 1 MiB is refused (in memory too), where the limit is
/// crossed.
#[test]
fn documents_over_the_size_limit_are_refused() {
    let big = format!("{}# {}\n", private_service(), "x".repeat(1024 * 1024));
    let got = refused(&big);
    assert_eq!(got.len(), 1);
    let col = 1024 * 1024 - private_service().len() + 1;
    assert!(
        got[0].starts_with(&format!("serverless.yml:14:{col}: the file is larger than 1024 KiB")),
        "{got:?}"
    );
}

/// Issue 12 finding 5: a 699-byte "billion laughs" document took 8 GB and aborted. Aliases now
/// expand to at most 10,000 nodes.
#[test]
fn alias_bombs_are_refused() {
    let mut yml = String::from(
        "service: svc\nbomb:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for (prev, name) in
        ["a", "b", "c", "d", "e", "f", "g", "h", "i"].windows(2).map(|w| (w[0], w[1]))
    {
        yml.push_str(&format!("  {name}: &{name} [{}]\n", vec![format!("*{prev}"); 9].join(", ")));
    }
    assert!(yml.len() < 700, "{}", yml.len());
    assert_eq!(
        refused(&yml),
        vec![
            "serverless.yml:7:10: bomb.e[0]: aliases (`*name`) in this file expand to more than \
             10000 values; keygate stops here (a document that multiplies itself through aliases \
             is refused)"
        ]
    );
    // Merge keys expand aliases too.
    let mut yml = String::from("service: svc\nbomb:\n  a: &a {a0: 1, a1: 1, a2: 1, a3: 1}\n");
    for i in 1..12 {
        let prev = i - 1;
        yml.push_str(&format!(
            "  m{i}: &m{i}\n    x: *{}\n    <<: *{}\n    y: *{}\n",
            if i == 1 { "a".to_owned() } else { format!("m{prev}") },
            if i == 1 { "a".to_owned() } else { format!("m{prev}") },
            if i == 1 { "a".to_owned() } else { format!("m{prev}") }
        ));
    }
    let got = refused(&yml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("expand to more than 10000 values"), "{got:?}");
    // A few hundred aliased nodes, as real files have, are fine.
    let yml = with_head(
        "
        |custom:
        |  defaults: &defaults
        |    handler: h.f
        |    memorySize: 256
        |functions:
        |  f:
        |    <<: *defaults
        |    events:
        |      - http: GET f
        |  g:
        |    <<: *defaults
        |    events:
        |      - http: GET g
        ",
    );
    let none = |_: &str| None;
    let opts = LoadOptions { stage: None, region: None, env: &none, allow_unknown: false };
    let l = load_str("serverless.yml", &yml, Path::new("/srv/app"), &opts).unwrap();
    assert_eq!(l.definition.functions[1].memory_size, 256);
}

/// Issue 12 finding 5: 10,000 levels of nesting overflowed the stack (the process aborted), in
/// block and in flow style. Nesting is now refused past 64 levels, as each level opens.
#[test]
fn deep_nesting_is_refused_without_recursion() {
    let block = format!("service: svc\nx:\n  {}deep\n", "- ".repeat(10_000));
    let got = refused(&block);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("serverless.yml:3:129: x")
            && got[0].contains(
                "lists and maps nest more than 64 levels deep here; keygate reads at most 64 (a \
             serverless.yml needs about 10)"
            ),
        "{got:?}"
    );
    let flow = format!("service: svc\nx: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let got = refused(&flow);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("serverless.yml:2:"), "{got:?}");
    assert!(got[0].contains("nest more than 64 levels"), "{got:?}");
    let maps = format!("service: svc\nx: {}1{}\n", "{a: ".repeat(10_000), "}".repeat(10_000));
    assert!(refused(&maps)[0].contains("nest more than 64 levels"));
    let keys: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    assert!(refused(&format!("service: svc\n{keys}"))[0].contains("nest more than 64 levels"));
    // An alias cannot nest a deep anchor deeper.
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let yml =
        format!("service: svc\na: &a {}\nb: {}*a{}\n", deep(40), "[".repeat(30), "]".repeat(30));
    assert!(refused(&yml)[0].starts_with("serverless.yml:3:"), "{:?}", refused(&yml));
    // 60 levels are read (and then the unknown key is reported, not the depth).
    let ok = format!("service: svc\nx: {}\n", deep(60));
    assert!(refused(&ok).iter().all(|l| !l.contains("nest more")), "{:?}", refused(&ok));
}

/// Issue 12 finding 5: 30 levels of `${self:}` references that double each other took 6.4 GB.
/// A value may grow to 64 KiB, all values together to 100,000 nodes and 4 MiB.
#[test]
fn variable_bombs_are_refused() {
    let mut yml =
        format!("{HEAD}  environment:\n    X: ${{self:custom.l30}}\ncustom:\n  l0: lol\n");
    for i in 1..=30 {
        let p = i - 1;
        yml.push_str(&format!("  l{i}: ${{self:custom.l{p}}}${{self:custom.l{p}}}\n"));
    }
    assert_eq!(
        refused(&yml),
        vec![
            "serverless.yml:23:8: custom.l15: this value is longer than 64 KiB once its \
             variables are resolved; keygate refuses it (do `${self:..}` references repeat or \
             double each other?)"
        ]
    );
    // Lists that double: the node budget.
    let mut yml =
        format!("{HEAD}  environment:\n    X: ${{self:custom.l30}}\ncustom:\n  l0: [a, b]\n");
    for i in 1..=30 {
        let p = i - 1;
        yml.push_str(&format!("  l{i}: ['${{self:custom.l{p}}}', '${{self:custom.l{p}}}']\n"));
    }
    let got = refused(&yml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("expand to more than 100000 values or 4 MiB of text"), "{got:?}");
    // Many references to one large value: the text budget.
    let mut yml = format!("{HEAD}  environment:\n");
    for i in 0..100 {
        yml.push_str(&format!("    X{i}: ${{self:custom.big}}\n"));
    }
    yml.push_str(&format!("custom:\n  big: ${{opt:none, '{}'}}\n", "b".repeat(60_000)));
    let got = refused(&yml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("4 MiB of text"), "{got:?}");
    // A chain of 40 references: the depth limit.
    let mut yml = format!("{HEAD}  environment:\n    X: ${{self:custom.l0}}\ncustom:\n");
    for i in 0..40 {
        yml.push_str(&format!("  l{i}: ${{self:custom.l{}}}\n", i + 1));
    }
    yml.push_str("  l40: end\n");
    let got = refused(&yml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("variables nest more than 32 levels deep"), "{got:?}");
    // Variables inside variables, 10,000 deep (a recursion per level before).
    let nested = format!("{}'x'{}", "${opt:a, ".repeat(10_000), "}".repeat(10_000));
    let yml = format!("{HEAD}  environment:\n    X: \"{nested}\"\n");
    let got = refused(&yml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("serverless.yml:6:8: provider.environment.X: variables nest"),
        "{got:?}"
    );
}

/// One function `f` with one http event: `event` holds the event's extra lines (indented for the
/// event's map), `function` the function's extra lines. The event starts on line 9.
fn one_route(function: &str, event: &str) -> String {
    with_head(&format!(
        "
        |functions:
        |  f:
        |    handler: h.f
        |    events:
        |      - http:
        |          path: secret
        |          method: get
{event}{function}        "
    ))
}

/// Issue 13: a typo must never unlock a route or drop one. Unknown keys are errors with a
/// "did you mean"; keys Serverless defines and keygate does not use stay notes.
#[test]
fn typos_fail_closed() {
    run(vec![
        case(
            "privat: true under an http event deployed the route public",
            one_route("", "        |          privat: true\n"),
            Expect::Err(&[
                "serverless.yml:12:11: functions.f.events[0].http.privat: unknown key in an http \
                  event; did you mean `private`?",
            ]),
        ),
        case(
            "functons: deployed a stage without endpoints",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided.al2023
                |functons:
                |  f:
                |    handler: h.f
                |    events: [{http: GET f}]
            "),
            Expect::Err(&[
                "serverless.yml:5:1: functons: unknown top-level key; did you mean `functions`?",
            ]),
        ),
        case(
            "misspelt keys in provider, apiGateway, a function, capacityProvider, package, \
              request, events, a usage plan and CORS",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided.al2023
                |  stge: prod
                |  apiGateway:
                |    apiKey: [k]
                |    usagePlan:
                |      - free:
                |          throtle: {rateLimit: 1, burstLimit: 1}
                |functions:
                |  f:
                |    hanlder: h.f
                |    handler: h.f
                |    capacityProvider: {name: x, maxConcurency: 2}
                |    package: {artifcat: f.zip}
                |    events:
                |      - htpp: GET x
                |      - http:
                |          path: p
                |          method: get
                |          integration: http-proxy
                |          request: {uir: 'http://x'}
                |          cors: {origns: ['*']}
                |          foo: 1
            "),
            Expect::Err(&[
                "serverless.yml:5:3: provider.stge: unknown key in provider; did you mean \
                  `stage`?",
                "serverless.yml:7:5: provider.apiGateway.apiKey: unknown key in \
                  provider.apiGateway; did you mean `apiKeys`?",
                "serverless.yml:10:11: provider.apiGateway.usagePlan[0].free.throtle: unknown \
                  usage plan property \"throtle\"; a usage plan has only quota and throttle (did \
                  you mean `throttle`?)",
                "serverless.yml:13:5: functions.f.hanlder: unknown key in a function; did you \
                  mean `handler`?",
                "serverless.yml:15:33: functions.f.capacityProvider.maxConcurency: unknown key in \
                  capacityProvider; did you mean `maxConcurrency`?",
                "serverless.yml:16:15: functions.f.package.artifcat: unknown key in package; did \
                  you mean `artifact`?",
                "serverless.yml:18:9: functions.f.events[0].htpp: unknown event type; did you \
                  mean `http`?",
                "serverless.yml:19:9: functions.f.events[1].http.request.uri: missing; an \
                  http-proxy integration needs `request: {uri: https://...}`",
                "serverless.yml:23:21: functions.f.events[1].http.request.uir: unknown key in \
                  request; did you mean `uri`?",
                "serverless.yml:24:18: functions.f.events[1].http.cors.origns: unknown CORS \
                  setting `origns`; did you mean `origins`? expected origin, origins, headers, \
                  methods, allowCredentials, maxAge or cacheControl",
                "serverless.yml:25:11: functions.f.events[1].http.foo: unknown key in an http \
                  event; keygate reads path, method, private, cors, integration, request, \
                  authorizer, async here (and ignores the other keys Serverless defines): check \
                  the spelling, or pass --allow-unknown to ignore it",
            ]),
        ),
        case(
            "unknown runtimes, even with --allow-unknown",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided.al2032
                |functions:
                |  a:
                |    handler: h.a
                |    runtime: nodjs18.x
                |    events: [{http: GET a}]
                |  b:
                |    handler: h.b
                |    runtime: java17
                |  c:
                |    handler: h.c
                |    runtime: cobol
                |  d:
                |    handler: h.d
                |    runtime: python3
            "),
            Expect::Err(&[
                "serverless.yml:4:12: provider.runtime: unknown runtime \"provided.al2032\"; \
                  did you mean `provided.al2023`? keygate runs provided, provided.al2 and \
                  provided.al2023 (a `bootstrap` executable, e.g. a Rust or Go function), \
                  nodejsN.x (on the machine's `node`) and python3.N (on the machine's `python3`)",
                "serverless.yml:8:14: functions.a.runtime: unknown runtime \"nodjs18.x\"; did \
                  you mean `nodejs18.x`? keygate runs provided, provided.al2 and provided.al2023 \
                  (a `bootstrap` executable, e.g. a Rust or Go function), nodejsN.x (on the \
                  machine's `node`) and python3.N (on the machine's `python3`)",
                "serverless.yml:12:14: functions.b.runtime: the runtime \"java17\" is not \
                  supported; keygate runs provided, provided.al2 and provided.al2023 (a \
                  `bootstrap` executable, e.g. a Rust or Go function), nodejsN.x (on the \
                  machine's `node`) and python3.N (on the machine's `python3`)",
                "serverless.yml:15:14: functions.c.runtime: unknown runtime \"cobol\"; keygate \
                  runs provided, provided.al2 and provided.al2023 (a `bootstrap` executable, \
                  e.g. a Rust or Go function), nodejsN.x (on the machine's `node`) and python3.N \
                  (on the machine's `python3`)",
                "serverless.yml:18:14: functions.d.runtime: the runtime \"python3\" is not \
                  supported; keygate runs provided, provided.al2 and provided.al2023 (a \
                  `bootstrap` executable, e.g. a Rust or Go function), nodejsN.x (on the \
                  machine's `node`) and python3.N (on the machine's `python3`)",
            ]),
        ),
        case(
            "accepted runtimes",
            y("
                |service: svc
                |provider:
                |  name: aws
                |  runtime: provided
                |functions:
                |  a: {handler: h, runtime: provided.al2, events: [{http: GET a}]}
                |  b: {handler: h, runtime: provided.al2023}
                |  c: {handler: h, runtime: nodejs4.3}
                |  d: {handler: h, runtime: nodejs22.x}
                |  e: {handler: h, runtime: python3.13}
                |  f: {handler: h}
            "),
            Expect::Ok(|l| {
                let r: Vec<&str> =
                    l.definition.functions.iter().map(|f| f.runtime.as_str()).collect();
                assert_eq!(
                    r,
                    [
                        "provided.al2",
                        "provided.al2023",
                        "nodejs4.3",
                        "nodejs22.x",
                        "python3.13",
                        "provided"
                    ]
                );
            }),
        ),
        case(
            "keys Serverless defines that keygate ignores stay notes",
            y("
                |service: svc
                |org: o
                |app: a
                |console: true
                |dashboard: {disableMonitoring: true}
                |build: {esbuild: false}
                |stages: {default: {params: {x: 1}}}
                |params: {prod: {x: 2}}
                |frameworkVersion: '4'
                |configValidationMode: error
                |useDotenv: true
                |variablesResolutionMode: '20210326'
                |plugins: [serverless-offline]
                |custom: {x: 1}
                |package: {individually: true}
                |resources: {Resources: {}}
                |provider:
                |  name: aws
                |  runtime: provided.al2023
                |  iam: {role: x}
                |  tracing: {lambda: true}
                |  logs: {restApi: true}
                |  deploymentBucket: {name: b}
                |functions:
                |  f:
                |    handler: h.f
                |    layers: [x]
                |    vpc: {securityGroupIds: [a], subnetIds: [b]}
                |    package: {patterns: ['!x']}
                |    events:
                |      - schedule: rate(1 minute)
                |      - http:
                |          path: p
                |          method: get
                |          request: {parameters: {querystrings: {a: true}}}
            "),
            Expect::Ok(|l| {
                assert_eq!(
                    l.notes,
                    [
                        "ignored events (keygate serves only http events): schedule \
                          (functions.f.events[0])",
                        "ignored (not used by keygate): org, app, console, dashboard, build, \
                          stages, params, frameworkVersion, useDotenv, variablesResolutionMode, \
                          plugins, custom, provider.iam, provider.tracing, \
                          provider.logs, provider.deploymentBucket, package.individually, \
                          functions.f.layers, functions.f.vpc, \
                          functions.f.events[1].http.request.parameters",
                    ]
                );
            }),
        ),
    ]);
}

/// `--allow-unknown`, and Serverless's own `configValidationMode: warn|off`, make unknown keys
/// notes, except one that looks like a misspelt auth setting: `privat: true` stays an error,
/// since ignoring it would serve the route open (fail closed).
#[test]
fn allow_unknown_makes_unknown_keys_notes() {
    fn noted(l: &Loaded) {
        assert!(l.definition.functions[0].events[0].private);
        assert_eq!(
            l.notes,
            ["not recognised, so ignored (check the spelling): functions.f.events[0].http.colour"]
        );
    }
    let colour =
        one_route("", "        |          private: true\n        |          colour: red\n");
    let privat = one_route("", "        |          privat: true\n");
    let mode = |yml: &str, m: &str| {
        yml.replacen("service: svc\n", &format!("service: svc\nconfigValidationMode: {m}\n"), 1)
    };
    // Line 12 in the file as it is, 13 with a `configValidationMode:` line above.
    const STILL_AN_ERROR: &str = "serverless.yml:12:11: functions.f.events[0].http.privat: \
         unknown key in an http event; did you mean `private`? (a misspelt auth setting stays an \
         error when unknown keys are allowed: ignoring it could serve a route open)";
    const STILL_AN_ERROR_13: &str = "serverless.yml:13:11: functions.f.events[0].http.privat: \
         unknown key in an http event; did you mean `private`? (a misspelt auth setting stays an \
         error when unknown keys are allowed: ignoring it could serve a route open)";
    run(vec![
        allowing(case("--allow-unknown", colour.clone(), Expect::Ok(noted))),
        case("configValidationMode: warn", mode(&colour, "warn"), Expect::Ok(noted)),
        case("configValidationMode: off", mode(&colour, "off"), Expect::Ok(noted)),
        allowing(case("--allow-unknown, privat", privat.clone(), Expect::Err(&[STILL_AN_ERROR]))),
        case("warn, privat", mode(&privat, "warn"), Expect::Err(&[STILL_AN_ERROR_13])),
        case(
            "configValidationMode: error",
            mode(&privat, "error"),
            Expect::Err(&["serverless.yml:13:11: functions.f.events[0].http.privat: unknown key \
                  in an http event; did you mean `private`?"]),
        ),
        case(
            "configValidationMode: bogus",
            mode(&privat, "bogus"),
            Expect::Err(&[
                "serverless.yml:2:23: configValidationMode: expected error, warn or off, found \
                  \"bogus\"",
                "serverless.yml:13:11: functions.f.events[0].http.privat: unknown key in an http \
                  event; did you mean `private`?",
            ]),
        ),
    ]);
}

/// A service must serve something: no `- http:` event anywhere is an error.
#[test]
fn a_service_without_http_events_is_refused() {
    run(vec![
        case(
            "only a schedule event",
            with_head(
                "
                |functions:
                |  f:
                |    handler: h.f
                |    events:
                |      - schedule: rate(1 minute)
                ",
            ),
            Expect::Err(&[
                "serverless.yml:5:1: functions: no function has an http event: nothing to serve; \
                  keygate serves `- http:` events, e.g. `events: [{http: GET hello}]` under a \
                  function",
            ]),
        ),
        case(
            "no functions",
            format!("{HEAD}functions:\n"),
            Expect::Err(&[
                "serverless.yml:5:1: functions: no function has an http event: nothing \
                  to serve; keygate serves `- http:` events, e.g. `events: [{http: GET hello}]` \
                  under a function",
            ]),
        ),
        case(
            "no functions section",
            format!("{HEAD}# and no functions\n"),
            Expect::Err(&[
                "serverless.yml:1:1: functions: no function has an http event: nothing \
                  to serve; keygate serves `- http:` events, e.g. `events: [{http: GET hello}]` \
                  under a function",
            ]),
        ),
    ]);
}

/// `private` (and every boolean) takes only a YAML boolean: `yes`, `"true"`, `1` or nothing are
/// errors, not guesses. A variable may give the text `true` / `false` (environment variables
/// are text).
#[test]
fn booleans_are_strict() {
    let with = |v: &str| one_route("", &format!("        |          private: {v}\n"));
    let private = |l: &Loaded| assert!(l.definition.functions[0].events[0].private);
    let mut from_env = case("from a variable", with("${env:PRIVATE}"), Expect::Ok(private));
    from_env.env = &[("PRIVATE", "true")];
    let mut bad_env = case(
        "from a variable, not a boolean",
        with("${env:PRIVATE}"),
        Expect::Err(&[
            "serverless.yml:12:20: functions.f.events[0].http.private: expected true or \
              false (a YAML boolean, unquoted), or report, found \"yes\"",
        ]),
    );
    bad_env.env = &[("PRIVATE", "yes")];
    let reporting = |l: &Loaded| {
        let e = &l.definition.functions[0].events[0];
        assert!(e.report && !e.private, "{e:?}");
    };
    let mut report_env =
        case("report from a variable", with("${env:PRIVATE}"), Expect::Ok(reporting));
    report_env.env = &[("PRIVATE", "report")];
    run(vec![
        case("report", with("report"), Expect::Ok(reporting)),
        report_env,
        case(
            "yes",
            with("yes"),
            Expect::Err(&["serverless.yml:12:20: functions.f.events[0].http.private: expected \
                  true or false (a YAML boolean, unquoted), or report, found \"yes\""]),
        ),
        case(
            "quoted true",
            with("\"true\""),
            Expect::Err(&["serverless.yml:12:20: functions.f.events[0].http.private: expected \
                  true or false (a YAML boolean, unquoted), or report, found \"true\""]),
        ),
        case(
            "quoted false",
            with("'false'"),
            Expect::Err(&["serverless.yml:12:20: functions.f.events[0].http.private: expected \
                  true or false (a YAML boolean, unquoted), or report, found \"false\""]),
        ),
        case(
            "1",
            with("1"),
            Expect::Err(&["serverless.yml:12:20: functions.f.events[0].http.private: expected \
                  true or false (a YAML boolean, unquoted), or report, found 1"]),
        ),
        case(
            "nothing",
            with(""),
            Expect::Err(&[
                "serverless.yml:14:1: functions.f.events[0].http.private: expected true \
                  or false (a YAML boolean, unquoted), or report, found nothing",
            ]),
        ),
        case("True", with("True"), Expect::Ok(private)),
        from_env,
        bad_env,
        case(
            "cors: 'true'",
            one_route("", "        |          cors: 'true'\n"),
            Expect::Err(&[
                "serverless.yml:12:17: functions.f.events[0].http.cors: expected true or false (a \
                  YAML boolean, unquoted), found \"true\"",
            ]),
        ),
    ]);
}

/// `resources`: the seed series' candidates table (variables in its name, `DeletionPolicy:
/// Retain`, a stream) becomes a table spec; other resource types are ignored with a note; a
/// table DynamoDB would refuse is an error at its place.
#[test]
fn dynamodb_tables_from_resources() {
    const TABLE: &str = "
        |service: candidate-service
        |provider:
        |  name: aws
        |  runtime: nodejs20.x
        |  environment:
        |    CANDIDATE_TABLE: ${self:service}-${opt:stage, self:provider.stage}
        |functions:
        |  list:
        |    handler: api/candidates.list
        |    events: [{http: GET candidates}]
        |resources:
        |  Resources:
        |    CandidatesDynamoDbTable:
        |      Type: 'AWS::DynamoDB::Table'
        |      DeletionPolicy: Retain
        |      Properties:
        |        AttributeDefinitions:
        |          - AttributeName: id
        |            AttributeType: S
        |        KeySchema:
        |          - AttributeName: id
        |            KeyType: HASH
        |        ProvisionedThroughput:
        |          ReadCapacityUnits: 1
        |          WriteCapacityUnits: 1
        |        StreamSpecification:
        |          StreamViewType: NEW_AND_OLD_IMAGES
        |        TableName: ${self:provider.environment.CANDIDATE_TABLE}
        |    Bucket:
        |      Type: AWS::S3::Bucket
    ";
    fn seed_table(l: &Loaded) {
        let t = &l.definition.tables;
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.logical_id, "CandidatesDynamoDbTable");
        assert_eq!(t.table_name, "candidate-service-dev");
        assert!(t.retain);
        assert_eq!(t.attributes, vec![("id".to_owned(), "S".to_owned())]);
        assert_eq!(t.key.hash, "id");
        assert_eq!(t.key.range, None);
        assert_eq!(t.provisioned, Some((1, 1)));
        assert_eq!(t.stream_view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));
        assert_eq!(t.describe_key(), "id (S, HASH)");
        assert!(l.notes.iter().any(|n| n.contains("resources.Resources.Bucket")), "{:?}", l.notes);
    }
    fn indexed(l: &Loaded) {
        let t = &l.definition.tables[0];
        assert_eq!(t.table_name, "svc-dev-Orders", "a table without TableName");
        assert!(!t.retain);
        assert_eq!(t.provisioned, None);
        assert_eq!(t.key.range.as_deref(), Some("createdAt"));
        assert_eq!(t.global_indexes.len(), 1);
        assert_eq!(t.global_indexes[0].name, "byEmail");
        assert_eq!(t.global_indexes[0].projection, "INCLUDE");
        assert_eq!(t.global_indexes[0].non_key_attributes, vec!["name".to_owned()]);
        assert_eq!(t.local_indexes[0].key.range.as_deref(), Some("status"));
    }
    let indexes = "
        |service: svc
        |provider: {name: aws, runtime: nodejs20.x}
        |functions:
        |  f: {handler: h.f, events: [{http: GET f}]}
        |resources:
        |  Resources:
        |    Orders:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        BillingMode: PAY_PER_REQUEST
        |        AttributeDefinitions:
        |          - {AttributeName: id, AttributeType: S}
        |          - {AttributeName: createdAt, AttributeType: N}
        |          - {AttributeName: email, AttributeType: S}
        |          - {AttributeName: status, AttributeType: S}
        |        KeySchema:
        |          - {AttributeName: id, KeyType: HASH}
        |          - {AttributeName: createdAt, KeyType: RANGE}
        |        GlobalSecondaryIndexes:
        |          - IndexName: byEmail
        |            KeySchema: [{AttributeName: email, KeyType: HASH}]
        |            Projection: {ProjectionType: INCLUDE, NonKeyAttributes: [name]}
        |        LocalSecondaryIndexes:
        |          - IndexName: byStatus
        |            KeySchema:
        |              - {AttributeName: id, KeyType: HASH}
        |              - {AttributeName: status, KeyType: RANGE}
        |            Projection: {ProjectionType: ALL}
    ";
    let broken = "
        |service: svc
        |provider: {name: aws, runtime: nodejs20.x}
        |functions:
        |  f: {handler: h.f, events: [{http: GET f}]}
        |resources:
        |  Resources:
        |    T:
        |      Type: AWS::DynamoDB::Table
        |      DeletionPolicy: Keep
        |      Properties:
        |        TableName: no
        |        AttributeDefinitions:
        |          - {AttributeName: id, AttributeType: String}
        |        KeySchema:
        |          - {AttributeName: id, KeyType: HASH}
        |        StreamSpecification: {StreamViewType: NEW}
        |        TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
        |    U:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        BillingMode: PAY_PER_REQUEST
        |        AttributeDefinitions:
        |          - {AttributeName: pk, AttributeType: S}
        |          - {AttributeName: extra, AttributeType: S}
        |        KeySchema:
        |          - {AttributeName: id, KeyType: HASH}
        |        KeySchma: []
        |    V:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
        |        KeySchema: [{AttributeName: id, KeyType: HASH}]
    ";
    run(vec![
        case("the seed series' table", y(TABLE), Expect::Ok(seed_table)),
        case("indexes and a generated name", y(indexes), Expect::Ok(indexed)),
        case(
            "tables DynamoDB would refuse",
            y(broken),
            Expect::Err(&[
                "serverless.yml:9:23: resources.Resources.T.DeletionPolicy: expected Delete, \
                  Retain or Snapshot, found \"Keep\"",
                "serverless.yml:11:20: resources.Resources.T.Properties.TableName: \"no\" is not \
                  a DynamoDB table name: 3 to 255 letters, digits, `_`, `.` and `-`",
                "serverless.yml:13:48: \
                  resources.Resources.T.Properties.AttributeDefinitions[0].AttributeType: \
                  expected S, N or B, found \"String\"",
                "serverless.yml:16:47: \
                  resources.Resources.T.Properties.StreamSpecification.StreamViewType: expected \
                  one of NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY, found \"NEW\"",
                "serverless.yml:23:11: resources.Resources.U.Properties.AttributeDefinitions: the \
                  attribute \"pk\" is defined but is no key of the table or an index; DynamoDB \
                  refuses that: define only key attributes",
                "serverless.yml:23:11: resources.Resources.U.Properties.AttributeDefinitions: the \
                  attribute \"extra\" is defined but is no key of the table or an index; \
                  DynamoDB refuses that: define only key attributes",
                "serverless.yml:26:11: resources.Resources.U.Properties.KeySchema: the key \
                  attribute \"id\" is not in AttributeDefinitions; add `- {AttributeName: id, \
                  AttributeType: S}` (or N, B)",
                "serverless.yml:27:9: resources.Resources.U.Properties.KeySchma: unknown property \
                  of an AWS::DynamoDB::Table; did you mean `KeySchema`?",
                "serverless.yml:30:7: resources.Resources.V.Properties.ProvisionedThroughput: \
                  missing; e.g. `{ReadCapacityUnits: 1, WriteCapacityUnits: 1}`, or \
                  `BillingMode: PAY_PER_REQUEST`",
            ]),
        ),
    ]);
}

/// `- stream:` events on a table's stream (the seed series' next post), in the forms Serverless
/// users write them; a stream keygate cannot read is an error at its place.
#[test]
fn dynamodb_stream_events() {
    const TABLE: &str = "
        |resources:
        |  Resources:
        |    CandidatesDynamoDbTable:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        BillingMode: PAY_PER_REQUEST
        |        AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
        |        KeySchema: [{AttributeName: id, KeyType: HASH}]
        |        StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
        |    NoStream:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        BillingMode: PAY_PER_REQUEST
        |        AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
        |        KeySchema: [{AttributeName: id, KeyType: HASH}]
    ";
    let forms = format!(
        "
        |service: svc
        |provider: {{name: aws, runtime: nodejs20.x}}
        |functions:
        |  api: {{handler: h.api, events: [{{http: GET a}}]}}
        |  notify:
        |    handler: h.notify
        |    events:
        |      - stream:
        |          type: dynamodb
        |          arn:
        |            Fn::GetAtt: [CandidatesDynamoDbTable, StreamArn]
        |          batchSize: 1
        |          startingPosition: LATEST
        |          maximumRetryAttempts: 2
        |      - stream: !GetAtt CandidatesDynamoDbTable.StreamArn
        |      - stream: arn:aws:dynamodb:us-east-1:123456789012:table/other-table/stream/2026-01-01T00:00:00.000
        |      - stream: {{type: kinesis, arn: arn:aws:kinesis:us-east-1:1:stream/x}}
        {TABLE}"
    );
    fn streams(l: &Loaded) {
        let f = &l.definition.functions[1];
        assert_eq!(f.streams.len(), 3);
        let s = &f.streams[0];
        assert_eq!(s.table, StreamTable::Resource("CandidatesDynamoDbTable".to_owned()));
        assert_eq!((s.batch_size, s.starting_position.as_str()), (1, "LATEST"));
        assert_eq!(s.maximum_retry_attempts, Some(2));
        assert!(s.enabled);
        let s = &f.streams[1];
        assert_eq!(s.table, StreamTable::Resource("CandidatesDynamoDbTable".to_owned()));
        assert_eq!((s.batch_size, s.starting_position.as_str()), (10, "TRIM_HORIZON"));
        assert_eq!(s.maximum_retry_attempts, None);
        assert_eq!(f.streams[2].table, StreamTable::Name("other-table".to_owned()));
        assert!(l.notes.iter().any(|n| n.contains("kinesis stream")), "{:?}", l.notes);
    }
    let broken = format!(
        "
        |service: svc
        |provider: {{name: aws, runtime: nodejs20.x}}
        |functions:
        |  api: {{handler: h.api, events: [{{http: GET a}}]}}
        |  notify:
        |    handler: h.notify
        |    events:
        |      - stream: {{type: dynamodb, arn: {{Fn::GetAtt: [Missing, StreamArn]}}}}
        |      - stream: {{type: dynamodb, arn: {{Fn::GetAtt: [NoStream, StreamArn]}}}}
        |      - stream: {{type: dynamodb, arn: {{Fn::GetAtt: [CandidatesDynamoDbTable, Arn]}}}}
        |      - stream: {{type: dynamodb, arn: x, startingPosition: AT_TIMESTAMP}}
        |      - stream: {{type: dynamodb, arn: not-an-arn}}
        {TABLE}"
    );
    run(vec![
        case("the forms of a stream event", y(&forms), Expect::Ok(streams)),
        case(
            "streams keygate cannot read",
            y(&broken),
            Expect::Err(&[
                "serverless.yml:8:40: functions.notify.events[0].stream.arn: no DynamoDB table \
                  \"Missing\" in resources.Resources (it has CandidatesDynamoDbTable, NoStream)",
                "serverless.yml:9:40: functions.notify.events[1].stream.arn: the table NoStream \
                  has no stream; add `StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}` \
                  to its Properties",
                "serverless.yml:10:40: functions.notify.events[2].stream.arn: Fn::GetAtt gives \
                  \"Arn\" here, which is not a stream; use StreamArn",
                "serverless.yml:11:60: functions.notify.events[3].stream.startingPosition: \
                  expected TRIM_HORIZON or LATEST, found \"AT_TIMESTAMP\" (AT_TIMESTAMP is for \
                  Kinesis)",
                "serverless.yml:12:39: functions.notify.events[4].stream.arn: expected a \
                  DynamoDB stream ARN: `Fn::GetAtt: [Table, StreamArn]` for a table of \
                  resources, or arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL, found \
                  \"not-an-arn\"",
            ]),
        ),
    ]);
}

/// `Ref` and `Fn::GetAtt` of a table in environment values resolve as CloudFormation resolves
/// them: the table's name, its ARN.
#[test]
fn table_references_in_the_environment() {
    let table = "
        |resources:
        |  Resources:
        |    Candidates:
        |      Type: AWS::DynamoDB::Table
        |      Properties:
        |        TableName: candidate-${sls:stage}
        |        BillingMode: PAY_PER_REQUEST
        |        AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
        |        KeySchema: [{AttributeName: id, KeyType: HASH}]
    ";
    let ok = format!(
        "
        |service: svc
        |provider:
        |  name: aws
        |  runtime: nodejs20.x
        |  region: eu-west-1
        |  environment:
        |    TABLE: {{Ref: Candidates}}
        |functions:
        |  f:
        |    handler: h.f
        |    environment:
        |      SHORT: !Ref Candidates
        |      ARN: {{Fn::GetAtt: [Candidates, Arn]}}
        |      TAGGED_ARN: !GetAtt Candidates.Arn
        |    events: [{{http: GET f}}]
        {table}"
    );
    fn resolved(l: &Loaded) {
        let env = &l.definition.functions[0].environment;
        assert_eq!(env["TABLE"], "candidate-dev");
        assert_eq!(env["SHORT"], "candidate-dev");
        let arn = "arn:aws:dynamodb:eu-west-1:000000000000:table/candidate-dev";
        assert_eq!((env["ARN"].as_str(), env["TAGGED_ARN"].as_str()), (arn, arn));
    }
    let bad = format!(
        "
        |service: svc
        |provider: {{name: aws, runtime: nodejs20.x}}
        |functions:
        |  f:
        |    handler: h.f
        |    environment:
        |      A: {{Ref: Nope}}
        |      B: !GetAtt Candidates.StreamArn
        |    events: [{{http: GET f}}]
        {table}"
    );
    run(vec![
        case("Ref and Fn::GetAtt", y(&ok), Expect::Ok(resolved)),
        case(
            "what keygate cannot resolve",
            y(&bad),
            Expect::Err(&[
                "serverless.yml:7:11: functions.f.environment.A: no DynamoDB table \"Nope\" in \
                  resources.Resources (it has Candidates); keygate resolves Ref and Fn::GetAtt to \
                  its tables only",
                "serverless.yml:8:18: functions.f.environment.B: Fn::GetAtt \"StreamArn\" of a \
                  table is not known before the table exists; use Ref (its name) or Arn",
            ]),
        ),
    ]);
}

/// `package.patterns` (and the older `include`/`exclude`) of the service, then of the function,
/// in order, for the function's code.
#[test]
fn package_patterns() {
    let yml = "
        |service: svc
        |provider: {name: aws, runtime: nodejs20.x}
        |package:
        |  individually: true
        |  exclude: [docs/**]
        |  patterns: ['!node_modules/aws-sdk/**']
        |functions:
        |  f:
        |    handler: h.f
        |    package:
        |      patterns: ['!tests/**', 'tests/fixture.json']
        |    events: [{http: GET f}]
    ";
    fn merged(l: &Loaded) {
        assert_eq!(
            l.definition.functions[0].package_patterns,
            ["!docs/**", "!node_modules/aws-sdk/**", "!tests/**", "tests/fixture.json"]
        );
    }
    let bad = "
        |service: svc
        |provider: {name: aws, runtime: nodejs20.x}
        |package:
        |  patterns: ['../secrets/**']
        |functions:
        |  f: {handler: h.f, events: [{http: GET f}]}
    ";
    run(vec![
        case("merged in order", y(yml), Expect::Ok(merged)),
        case(
            "outside the service",
            y(bad),
            Expect::Err(&["serverless.yml:4:3: package.patterns: \"../secrets/**\" is not a \
                  pattern keygate takes: a glob relative to the service directory, `!` before it \
                  to leave files out (e.g. `!node_modules/aws-sdk/**`)"]),
        ),
    ]);
}
