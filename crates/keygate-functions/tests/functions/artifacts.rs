//! Deploy-time staging of artifacts: file, directory, zip, errors and idempotence.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keygate_functions::{ArtifactError, FunctionHost, stage_artifact};
use serde_json::json;
use tempfile::TempDir;
use zip::write::SimpleFileOptions;

use crate::common::{Service, invoke, json, script, spec, testfn_binary};

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o111 != 0
}

fn write_zip(path: &Path, entries: &[(&str, &[u8], u32)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data, mode) in entries {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(*mode);
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn an_executable_file_is_staged_as_bootstrap() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("my-fn");
    script(&src, "exit 0");
    let staged = stage_artifact(&src, &tmp.path().join("artifacts")).unwrap();
    assert!(staged.starts_with(tmp.path().join("artifacts")));
    let bootstrap = staged.join("bootstrap");
    assert_eq!(std::fs::read(&bootstrap).unwrap(), std::fs::read(&src).unwrap());
    assert!(is_executable(&bootstrap));
}

#[test]
fn a_directory_is_copied_recursively() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("pkg");
    std::fs::create_dir_all(src.join("assets/deep")).unwrap();
    script(&src.join("bootstrap"), "exit 0");
    std::fs::write(src.join("assets/deep/data.txt"), "hello").unwrap();
    let staged = stage_artifact(&src, &tmp.path().join("artifacts")).unwrap();
    assert!(is_executable(&staged.join("bootstrap")));
    assert_eq!(std::fs::read_to_string(staged.join("assets/deep/data.txt")).unwrap(), "hello");
}

#[test]
fn a_staged_tree_is_readable_by_everyone_whatever_the_source_modes() {
    // Functions may run as another user (`nobody` when keygate runs as root).
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("pkg");
    std::fs::create_dir_all(src.join("private")).unwrap();
    script(&src.join("bootstrap"), "exit 0");
    std::fs::write(src.join("private/data.txt"), "hello").unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let set = |path: &Path, m: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(&src.join("bootstrap"), 0o700);
    set(&src.join("private/data.txt"), 0o600);
    set(&src.join("private"), 0o700);
    let root = tmp.path().join("artifacts");
    std::fs::create_dir(&root).unwrap();
    set(&root, 0o700);
    let staged = stage_artifact(&src, &root).unwrap();
    assert_eq!(mode(&root), 0o755);
    assert_eq!(mode(&staged), 0o755);
    assert_eq!(mode(&staged.join("bootstrap")), 0o755);
    assert_eq!(mode(&staged.join("private")), 0o755);
    assert_eq!(mode(&staged.join("private/data.txt")), 0o644);
}

#[test]
fn a_zip_is_extracted_and_bootstrap_made_executable() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("bootstrap.zip");
    write_zip(
        &src,
        &[("bootstrap", b"#!/bin/sh\nexit 0\n", 0o644), ("conf/app.json", b"{}", 0o644)],
    );
    let staged = stage_artifact(&src, &tmp.path().join("artifacts")).unwrap();
    assert!(is_executable(&staged.join("bootstrap")));
    assert_eq!(std::fs::read_to_string(staged.join("conf/app.json")).unwrap(), "{}");
}

#[tokio::test]
async fn a_cargo_lambda_style_zip_runs() {
    let tmp = TempDir::new().unwrap();
    let src = tmp.path().join("bootstrap.zip");
    let binary = std::fs::read(testfn_binary()).unwrap();
    write_zip(&src, &[("bootstrap", &binary, 0o755)]);
    let staged = stage_artifact(&src, &tmp.path().join("artifacts")).unwrap();

    let host = FunctionHost::default();
    let svc = Service::new();
    let mut spec = spec("echo");
    spec.artifact = Some(staged);
    let answer = json(&invoke(&host, &svc.f(&spec), json!({"hello": "zip"})).await.unwrap());
    assert_eq!(answer["statusCode"], 200);
    host.shutdown().await;
}

#[test]
fn errors_say_what_is_wrong() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("artifacts");

    let missing = tmp.path().join("target/lambda/fn/bootstrap");
    let err = stage_artifact(&missing, &root).unwrap_err();
    assert!(matches!(err, ArtifactError::Missing { .. }));
    assert!(err.to_string().contains("target/lambda/fn/bootstrap"), "{err}");

    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let err = stage_artifact(&empty_dir, &root).unwrap_err();
    assert!(matches!(err, ArtifactError::NoBootstrapInDir { .. }), "{err}");

    let zip = tmp.path().join("nothing.zip");
    write_zip(&zip, &[("README", b"hi", 0o644)]);
    let err = stage_artifact(&zip, &root).unwrap_err();
    assert!(matches!(err, ArtifactError::NoBootstrapInZip { .. }), "{err}");

    let broken = tmp.path().join("broken.zip");
    std::fs::write(&broken, "not a zip").unwrap();
    assert!(matches!(stage_artifact(&broken, &root), Err(ArtifactError::BadZip { .. })));

    let plain = tmp.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let err = stage_artifact(&plain, &root).unwrap_err();
    assert!(matches!(err, ArtifactError::NotExecutable { .. }));
    assert!(err.to_string().contains("chmod +x"), "{err}");

    let dir = tmp.path().join("dir-with-plain-bootstrap");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("bootstrap"), "#!/bin/sh\n").unwrap();
    assert!(matches!(stage_artifact(&dir, &root), Err(ArtifactError::NotExecutable { .. })));

    // Nothing half-staged is left behind.
    let leftovers = std::fs::read_dir(&root).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn staging_is_idempotent_and_content_addressed() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("artifacts");
    let src = tmp.path().join("bootstrap");
    script(&src, "echo v1");
    let first = stage_artifact(&src, &root).unwrap();
    let again = stage_artifact(&src, &root).unwrap();
    assert_eq!(first, again);

    // Rebuilding changes nothing already staged: the new content gets its own directory.
    script(&src, "echo v2");
    let second = stage_artifact(&src, &root).unwrap();
    assert_ne!(first, second);
    assert!(std::fs::read_to_string(first.join("bootstrap")).unwrap().contains("v1"));
    assert!(std::fs::read_to_string(second.join("bootstrap")).unwrap().contains("v2"));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 2);
}

/// A Node.js or Python function's code: the service directory filtered by `package.patterns`,
/// stored file by file, so a redeploy shares every unchanged file with the last one.
#[test]
fn code_is_staged_file_by_file_by_its_patterns_and_shared_between_deploys() {
    use std::os::unix::fs::MetadataExt;

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("svc");
    let root = tmp.path().join("artifacts");
    for (name, text) in [
        ("handler.js", "exports.a = 1;"),
        ("README.md", "docs"),
        ("node_modules/uuid/index.js", "uuid"),
        ("node_modules/aws-sdk/index.js", "sdk"),
        (".git/config", "[core]"),
    ] {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let patterns = vec!["!README.md".to_owned(), "!node_modules/aws-sdk/**".to_owned()];
    let first = keygate_functions::stage_code(&src, &root, &patterns).unwrap();
    assert!(first.join("handler.js").is_file());
    assert!(first.join("node_modules/uuid/index.js").is_file());
    for left_out in ["README.md", "node_modules/aws-sdk", ".git"] {
        assert!(!first.join(left_out).exists(), "{left_out} was staged");
    }
    assert_eq!(keygate_functions::stage_code(&src, &root, &patterns).unwrap(), first);

    // A changed handler: a new tree, sharing the unchanged files (the same inode).
    std::fs::write(src.join("handler.js"), "exports.a = 2;").unwrap();
    let second = keygate_functions::stage_code(&src, &root, &patterns).unwrap();
    assert_ne!(second, first);
    assert_eq!(std::fs::read_to_string(second.join("handler.js")).unwrap(), "exports.a = 2;");
    assert_eq!(std::fs::read_to_string(first.join("handler.js")).unwrap(), "exports.a = 1;");
    let ino = |dir: &std::path::Path| {
        std::fs::metadata(dir.join("node_modules/uuid/index.js")).unwrap().ino()
    };
    assert_eq!(ino(&first), ino(&second));
    let blobs = std::fs::read_dir(root.join("blobs")).unwrap().count();
    assert_eq!(blobs, 3, "two handlers and uuid");

    // Later patterns win: everything of node_modules out, then uuid back in.
    let narrow = vec!["!node_modules/**".to_owned(), "node_modules/uuid/**".to_owned()];
    let third = keygate_functions::stage_code(&src, &root, &narrow).unwrap();
    assert!(third.join("node_modules/uuid/index.js").is_file());
    assert!(!third.join("node_modules/aws-sdk").exists());
    assert!(third.join("README.md").is_file());

    let bad = keygate_functions::stage_code(&src, &root, &["[".to_owned()]).unwrap_err();
    assert!(bad.to_string().contains("package pattern \"[\""), "{bad}");
}
