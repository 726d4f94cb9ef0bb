//! The admin listener these tests run against: a fresh store in a temporary directory, served
//! on a free loopback port until the handle is dropped.

use std::sync::Arc;

use keygate_admin::console::Console;
use keygate_admin::{AdminState, ServeLimits};
use keygate_control::admin::MasterKey;
use tokio::net::TcpListener;

pub(crate) struct Running {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) state: Arc<AdminState>,
    /// The store itself, for what gateways write (usage, uses of old key values).
    #[allow(dead_code, reason = "not every test binary writes as a gateway")]
    pub(crate) backend: Arc<dyn keygate_control::ConfigStore>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves a new admin API with `console` within `limits`; changes are audited as `actor`.
pub(crate) async fn start(console: Console, limits: ServeLimits, actor: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let backend = keygate_control::open(dir.path()).await.unwrap();
    let store = keygate_control::Store::new(Arc::clone(&backend), actor);
    let state = Arc::new(AdminState {
        store,
        master: MasterKey::load(dir.path(), None).unwrap(),
        region: "us-east-1".to_owned(),
        console,
        health: Arc::new(keygate_types::health::Health::new()),
        metrics: Arc::new(prometheus_client::registry::Registry::default()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(keygate_admin::serve_with(listener, Arc::clone(&state), shutdown, limits, None));
    Running { addr, state, backend, _dir: dir, stop: Some(stop) }
}
