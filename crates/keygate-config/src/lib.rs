//! keygate-config: loads a Serverless Framework `serverless.yml` into a validated
//! [`ServiceDefinition`].
//!
//! Layout:
//! - `yaml`: a spanned YAML tree (every node keeps its line and column) built from yaml-rust2's
//!   event parser, with aliases and `<<` merge keys.
//! - `vars`: Serverless variables (`${opt:..}`, `${self:..}`, `${env:..}`, `${sls:stage}`,
//!   fallbacks, nesting), resolved lazily in the values keygate uses.
//! - `build`: the top level, `provider` and `functions`; `http`: `- http:` events; `keys`: API key
//!   declarations and their usage-plan groups; `plans`: usage plans (quota, throttle); `path`:
//!   route path templates.
//! - `ctx`: the walker those four share (`Ctx`: typed reads, problems, notes, declared
//!   routes). Calls and imports point one way: `build` → `http`, `keys`, `plans` → `ctx` →
//!   `vars` → `yaml` → `diag`; `keys` also reads `plans`' declarations.
//! - `tables`: `resources`, whose DynamoDB tables keygate creates at deploy.
//! - `source`: checks of the raw file before parsing (size, encoding, control characters).
//! - `diag`: [`Error`] and [`Diagnostic`] (file, line, column, field path, message).
//!
//! Every problem found is reported, not only the first, and no message or note ever contains an
//! API key value.

mod authorizer;
mod build;
mod ctx;
mod custom;
mod diag;
mod http;
mod keys;
mod path;
mod plans;
mod source;
mod streams;
mod tables;
mod vars;
mod yaml;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use keygate_types::{FunctionPlaces, ServiceDefinition};

pub use diag::{Diagnostic, Error};

/// How to resolve what the file leaves open.
pub struct LoadOptions<'a> {
    /// `--stage` (the `opt:stage` variable); wins over `provider.stage`.
    pub stage: Option<String>,
    /// `--region` (the `opt:region` variable); wins over `provider.region`.
    pub region: Option<String>,
    /// Environment lookup for `${env:NAME}`; the binary passes `|k| std::env::var(k).ok()`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `--allow-unknown`: keys neither keygate nor Serverless knows become notes instead of
    /// errors (as `configValidationMode: warn` in the file does). An unknown runtime stays an
    /// error: keygate could not run the function.
    pub allow_unknown: bool,
}

/// A loaded service and the notes worth showing its owner.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub definition: ServiceDefinition,
    /// Human-readable notes, each once: deprecated syntax, keys keygate accepts but ignores,
    /// event types it does not serve, unknown keys allowed by `allow_unknown`.
    pub notes: Vec<String>,
    /// Where each function's artifact, handler and runtime are written, by function name:
    /// problems found after loading, such as a missing artifact, point there.
    pub places: BTreeMap<String, FunctionPlaces>,
}

/// Reads and loads the `serverless.yml` at `path`. Diagnostics name the file as `path` is
/// written; the service's `base_dir` is the file's (absolute) directory.
pub fn load(path: &Path, opts: &LoadOptions<'_>) -> Result<Loaded, Error> {
    let name = path.display().to_string();
    let read_error = |source| Error::Read { path: path.to_path_buf(), source };
    // One byte past the limit is enough to refuse the file; a larger one is never read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(source::MAX_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    let text = source::decode(&bytes).map_err(|d| diag::into_error(&name, vec![d]))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&name, text, &base_dir, opts)
}

/// Loads a `serverless.yml` held in memory. `source_name` names it in diagnostics; relative
/// paths in it (such as `package.artifact`) resolve against `base_dir`.
pub fn load_str(
    source_name: &str,
    text: &str,
    base_dir: &Path,
    opts: &LoadOptions<'_>,
) -> Result<Loaded, Error> {
    let text = source::check(text).map_err(|d| diag::into_error(source_name, vec![d]))?;
    let parsed = yaml::parse(text);
    let mut diags = parsed.diags;
    if parsed.syntax_error {
        return Err(diag::into_error(source_name, diags));
    }
    let Some(root) = parsed.root else {
        diags.push(diag::Diag::new(
            diag::Mark::START,
            &diag::FieldPath::root(),
            "the file is empty; expected service, provider and functions",
        ));
        return Err(diag::into_error(source_name, diags));
    };
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let built = build::build(&root, base_dir, opts);
    diags.extend(built.diags);
    if !diags.is_empty() {
        return Err(diag::into_error(source_name, diags));
    }
    let at = |mark: diag::Mark| format!("{source_name}:{}:{}", mark.line, mark.col);
    let provider_runtime = root.get("provider").and_then(|p| p.get("runtime")).map(|r| r.mark);
    let places = built
        .definition
        .functions
        .iter()
        .filter_map(|f| {
            let yaml::Value::Map(functions) = &root.get("functions")?.value else { return None };
            let function = functions.iter().find(|e| e.key == f.name)?;
            let value = &function.value;
            let artifact = value.get("package").and_then(|p| p.get("artifact")).map(|a| a.mark);
            let handler = value.get("handler").map(|h| h.mark);
            let runtime = value.get("runtime").map(|r| r.mark).or(provider_runtime);
            let or_function = |mark: Option<diag::Mark>| at(mark.unwrap_or(function.key_mark));
            let places = FunctionPlaces {
                artifact: or_function(artifact),
                handler: or_function(handler),
                runtime: or_function(runtime),
            };
            Some((f.name.clone(), places))
        })
        .collect();
    Ok(Loaded { definition: built.definition, notes: built.notes, places })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_point_at_the_setting_or_the_function() {
        let yml = "service: svc
provider:
  name: aws
  runtime: provided.al2023
functions:
  a:
    handler: h
    package:
      artifact: ./a/bootstrap
  b:
    handler: h
    events:
      - http:
          path: b
          method: get
";
        let env = |_: &str| None;
        let opts = LoadOptions { stage: None, region: None, env: &env, allow_unknown: false };
        let loaded = load_str("sls.yml", yml, Path::new("/srv"), &opts).unwrap();
        assert_eq!(loaded.places["a"].artifact, "sls.yml:9:17");
        assert_eq!(loaded.places["b"].artifact, "sls.yml:10:3");
        assert_eq!(loaded.places["a"].handler, "sls.yml:7:14");
        assert_eq!(loaded.places["a"].runtime, "sls.yml:4:12");
    }
}
