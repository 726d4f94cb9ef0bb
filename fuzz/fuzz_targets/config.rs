//! serverless.yml loading with variables: any text either loads or is refused with a
//! diagnostic; it never panics, overflows the stack or runs out of memory.

use std::path::Path;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let env = |name: &str| (name == "FUZZ").then(|| "value".to_owned());
        let opts = keygate_config::LoadOptions {
            stage: None,
            region: None,
            env: &env,
            allow_unknown: false,
        };
        if let Ok(text) = std::str::from_utf8(data) {
            // A base directory with nothing in it: `${file(...)}` finds nothing relative.
            let base = Path::new("/nonexistent");
            let _ = keygate_config::load_str("serverless.yml", text, base, &opts);
        }
    });
}
