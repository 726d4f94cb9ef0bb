//! Route lookup: any method and path find a route, no method or nothing, never a panic. The
//! routes are those of a typical service (literals, parameters, a greedy `{proxy+}`, ANY).

use keygate_gateway::router::Router;
use keygate_types::HttpMethod;

fn main() {
    let mut router = Router::default();
    let routes = [
        ("/", HttpMethod::Get),
        ("/candidates", HttpMethod::Get),
        ("/candidates", HttpMethod::Post),
        ("/candidates/{id}", HttpMethod::Get),
        ("/candidates/{id}", HttpMethod::Delete),
        ("/candidates/search", HttpMethod::Get),
        ("/candidates/{id}/notes/{note}", HttpMethod::Put),
        ("/files/{proxy+}", HttpMethod::Any),
        ("/{proxy+}", HttpMethod::Options),
    ];
    for (i, (template, method)) in routes.into_iter().enumerate() {
        router.add(template, method, i).unwrap();
    }
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        // First line the method, the rest the path.
        let (method, path) = text.split_once('\n').unwrap_or(("GET", text));
        let _ = router.lookup(path, method);
    });
}
