//! Consistency checks for `serverless.yml`: every function names a handler
//! this binary knows, on the route the seed story uses, behind an API key.

use std::collections::BTreeMap;

use candidate_service::Handler;
use yaml_rust2::{Yaml, YamlLoader};

fn load() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/serverless.yml");
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

#[test]
fn functions_match_handlers_and_routes() {
    let doc = load();
    assert_eq!(doc["service"].as_str(), Some("candidate-service"));
    assert_eq!(doc["provider"]["runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(doc["provider"]["stage"].as_str(), Some("dev"));
    let keys = doc["provider"]["apiGateway"]["apiKeys"].as_vec().unwrap();
    assert_eq!(keys, &vec![Yaml::String("candidate-service-api-key".into())]);
    let env = &doc["provider"]["environment"];
    assert_eq!(
        env["CANDIDATE_TABLE"].as_str(),
        Some("candidate-${opt:stage, self:provider.stage}")
    );
    assert!(env["CANDIDATE_DB"].as_str().unwrap().starts_with("${env:CANDIDATE_DB, "));

    let mut routes = BTreeMap::new();
    for (name, function) in doc["functions"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        let handler: Handler = function["handler"].as_str().unwrap().parse().unwrap();
        let artifact = function["package"]["artifact"].as_str().unwrap();
        assert!(artifact.starts_with("${env:CANDIDATE_SERVICE_ARTIFACT, "), "{name}: {artifact}");
        let events = function["events"].as_vec().unwrap();
        assert_eq!(events.len(), 1, "{name}");
        let http = &events[0]["http"];
        assert_eq!(http["private"].as_bool(), Some(true), "{name} must require an API key");
        assert_eq!(http["cors"].as_bool(), Some(true), "{name}");
        let route =
            format!("{} {}", http["method"].as_str().unwrap(), http["path"].as_str().unwrap());
        routes.insert(route, (name.to_owned(), handler));
    }
    let expected = BTreeMap::from([
        ("get candidates".to_owned(), ("listCandidates".to_owned(), Handler::List)),
        ("get candidates/{id}".to_owned(), ("candidateDetails".to_owned(), Handler::Get)),
        ("post candidates".to_owned(), ("candidateSubmission".to_owned(), Handler::Submit)),
    ]);
    assert_eq!(routes, expected);
}
