//! keygate.toml (`--config`): the settings of the flags with an environment variable, below the
//! flag and the variable, above the defaults; `keygate config check` and `config settings`.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_sets_the_flags_and_the_command_line_and_environment_win() {
    let env = Env::new();
    env.deploy(&example_yml(), &[]);
    let access = env.path().join("access.log");
    let config = env.write(
        "keygate.toml",
        &format!(
            "# keygate settings\nready-path = \"/_file_ready\"\naccess-log = {:?}\n\
             access-log-format = \"json\"\n",
            access.to_str().unwrap()
        ),
    );
    let config = config.to_str().unwrap();
    let srv = env.start(&["--config", config, "serve", "--listen", "127.0.0.1:0"], &[]);
    let r = get(&srv.url("/_file_ready"), None).await;
    assert_eq!(r.status, 200, "the file's ready-path: {r:?}");
    get(&srv.url("/dev/candidates"), None).await.assert_forbidden();
    srv.stop();
    let lines = std::fs::read_to_string(&access).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().expect("a line")).unwrap();
    assert_eq!(first["status"], 403, "the file's JSON access log: {lines}");

    // The environment variable beats the file, the flag beats both; KEYGATE_CONFIG names it.
    let srv = env.start(
        &["serve", "--listen", "127.0.0.1:0", "--access-log-format", "text"],
        &[("KEYGATE_CONFIG", config), ("KEYGATE_READY_PATH", "/_env_ready")],
    );
    assert_eq!(get(&srv.url("/_env_ready"), None).await.status, 200);
    assert_eq!(get(&srv.url("/_file_ready"), None).await.status, 403);
    srv.stop();
    let text = std::fs::read_to_string(&access).unwrap();
    assert!(text.lines().last().unwrap().contains("keygate::access: request_id="), "{text}");

    let out = env.run(&["config", "check", config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ok (3 settings: ready-path, access-log, access-log-format)"), "{said}");
}

#[test]
fn a_bad_config_file_is_refused_with_where_and_what() {
    let env = Env::new();
    let bad = env.write(
        "bad.toml",
        "listen = \"127.0.0.1:0\"\ntls-crt = \"/etc/cert.pem\"\nno-such-thing = 1\n\
         [serve]\nlisten = \"x\"\n",
    );
    let bad = bad.to_str().unwrap();
    for args in [&["config", "check", bad][..], &["--config", bad, "serve"][..]] {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml:2:1: unknown setting `tls-crt`; did you mean `tls-cert`?"),
            "{err}"
        );
        assert!(
            err.contains("bad.toml:3:1: unknown setting `no-such-thing`; settings are the flags"),
            "{err}"
        );
        assert!(
            err.contains("bad.toml:4:2: `serve` must be a string, a number or true/false"),
            "{err}"
        );
    }
    // A value its flag's parser refuses; a TLS pair that cannot be used; not TOML at all.
    for (text, said) in [
        ("listen = \"nowhere\"\n", "invalid value 'nowhere' for '--listen <LISTEN>'"),
        ("ready-path = \"ready\"\n", "is not a path"),
        (
            "tls-cert = \"/nonexistent.pem\"\ntls-key = \"/nonexistent.key\"\n",
            "cannot read the TLS certificate /nonexistent.pem",
        ),
        ("listen = \n", "bad3.toml:1:10: not valid TOML"),
    ] {
        let file = env.write("bad3.toml", text);
        let out = env.run(&["config", "check", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{said:?} not in {err}");
    }
    let out = env.run(&["config", "settings"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    for key in ["listen", "tls-cert", "access-log", "data-dir", "function-user"] {
        assert!(listed.lines().any(|l| l.starts_with(key)), "{key} not in {listed}");
    }
    assert!(!listed.lines().any(|l| l.starts_with("config ")), "{listed}");
}

/// The keygate.toml of docs/operations.md passes `keygate config check` (its TLS files made
/// here: the paths are a server's).
#[test]
fn the_documented_config_file_checks() {
    let env = Env::new();
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = env.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("fullchain.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("privkey.pem"), generated.key_pair.serialize_pem()).unwrap();
    let text = block.replace("/etc/keygate/tls", dir.to_str().unwrap());
    let file = env.write("keygate.toml", &text);
    let out = env.run(&["config", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (8 settings"));
}
