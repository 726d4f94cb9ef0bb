//! Other local users cannot read keygate's state: the data directory is traverse-only (`0711`)
//! and the database files are `0600`, whatever the umask and whatever modes a directory had.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keygate_store::{Change, ConfigStore, KeyReads, SqliteStore};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Opens the store and writes once, so SQLite has made its `-wal` and `-shm` files.
async fn open_and_write(dir: &Path) -> SqliteStore {
    let store = SqliteStore::open(dir).await.unwrap();
    store.list_keys(keygate_store::Page::first(10), None).await.unwrap();
    store.apply("test", Change::RevokeAdminToken { id: "none".to_owned() }).await.ok();
    store
}

#[tokio::test]
async fn a_fresh_data_dir_and_its_database_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    let store = open_and_write(&dir).await;
    assert_eq!(mode(&dir), 0o711, "data dir");
    for name in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        let path = dir.join(name);
        assert!(path.exists(), "{name} was not created");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    store.close().await;
}

#[tokio::test]
async fn loose_modes_of_an_existing_data_dir_are_tightened_at_start() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for name in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        std::fs::write(dir.join(name), b"").unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = open_and_write(&dir).await;
    assert_eq!(mode(&dir), 0o711);
    for name in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    store.close().await;
}

#[tokio::test]
async fn a_tighter_data_dir_is_left_as_it_is() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let store = open_and_write(&dir).await;
    assert_eq!(mode(&dir), 0o700);
    store.close().await;
}

/// `open` chooses the backend by the URL's scheme and refuses one it does not have, rather than
/// opening another store.
#[tokio::test]
async fn open_takes_a_store_url_and_refuses_other_schemes() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("by-url");
    let store = keygate_store::open(&format!("sqlite:{}", dir.display())).await.unwrap();
    store.list_keys(keygate_store::Page::first(1), None).await.unwrap();
    assert!(dir.join("keygate.db").is_file());
    keygate_store::open(&format!("sqlite://{}", dir.display())).await.unwrap();
    for url in ["postgress://localhost/keygate", "sqlit:/tmp/x", "sqlite:", "/tmp/x"] {
        let Err(e) = keygate_store::open(url).await else { panic!("{url} opened") };
        let why = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(why.contains("sqlite:<"), "{url}: {why}");
    }
    // A password in a URL never shows in the error.
    let url = "postgres://keygate:s3cret-pw@127.0.0.1:1/keygate";
    let Err(e) = keygate_store::open(url).await else { panic!("{url} opened") };
    let why = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(why.contains("keygate:***@127.0.0.1:1") && !why.contains("s3cret"), "{why}");
}
