//! Body floods (issue 12, finding 3): requests without a key that start large bodies must not
//! make the gateway buffer them, and keyed requests must keep being served meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::support::*;

/// Connections in the flood, each announcing a body of [`BODY`] bytes.
const FLOOD: usize = 2_000;
const BODY: usize = 10 * 1024 * 1024;
/// Most connections being opened at once (the listener's backlog is 1024); once open, they
/// all stay open until answered.
const CONNECTING: usize = 256;
/// The RSS the gateway must stay under, in kB.
const RSS_LIMIT_KB: u64 = 100 * 1024;

const YML: &str = r#"service: flood
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys:
      - flood-key
functions:
  upload:
    handler: unused
    events:
      - http:
          path: upload
          method: post
          private: true
          integration: mock
"#;

/// Raises this process's open-file limit (inherited by the keygate it starts) to fit the flood
/// on both ends.
fn raise_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = (2 * FLOOD + 512) as u64;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= want) {
        return;
    }
    assert!(
        limit.maximum.is_none_or(|m| m >= want),
        "the hard open-file limit {:?} is below the {want} this test needs (ulimit -Hn)",
        limit.maximum
    );
    setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: limit.maximum }).unwrap();
}

/// The resident set of process `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A connection to `addr` from the loopback address `127.0.0.<source>` (Linux answers on all of
/// 127/8), so that one test can be several clients: the gateway caps connections per client
/// address.
async fn connect_from(source: u8, addr: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::new(127, 0, 0, source), 0).into())?;
    socket.connect(addr.parse().expect("an ip:port")).await
}

/// One flooding connection: the head of a [`BODY`]-byte POST without a key, then body bytes
/// until the answer arrives (or the whole body is sent). Returns the status line. Connections
/// come from four client addresses, each under the gateway's cap per address.
async fn flood_one(
    addr: String,
    source: u8,
    connecting: tokio::sync::OwnedSemaphorePermit,
) -> String {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let stream = connect_from(source, &addr).await.unwrap();
    drop(connecting);
    let (mut read, mut write) = stream.into_split();
    let head = format!("POST /dev/upload HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY}\r\n\r\n");
    let sending = async move {
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut sent = 0;
        while sent < BODY && write.write_all(&CHUNK).await.is_ok() {
            sent += CHUNK.len();
        }
        // Keep the write half open until the answer is read.
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    let reading = async {
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match read.read(&mut buf).await {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    };
    tokio::select! {
        () = sending => {}
        () = reading => {}
    }
    let line = String::from_utf8_lossy(&answer);
    line.lines().next().unwrap_or("no answer").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unkeyed_large_bodies_is_not_buffered_and_keyed_requests_go_on() {
    raise_nofile();
    let env = Env::new();
    let yml = env.write("serverless.yml", YML);
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let srv = env.serve();
    let pid = srv.pid();
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let url = srv.url("/dev/upload");
    let started = Instant::now();
    let idle_kb = rss_kb(pid);

    let mut flood = tokio::spawn(async move {
        let gate = Arc::new(Semaphore::new(CONNECTING));
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..FLOOD {
            let permit = Arc::clone(&gate).acquire_owned().await.unwrap();
            let source = 2 + (i % 4) as u8;
            flood.spawn(flood_one(addr.clone(), source, permit));
        }
        flood.join_all().await
    });

    // While the flood goes on: keyed requests are served, and the RSS is sampled.
    let client = client();
    let mut served = 0;
    let mut peak_kb = idle_kb;
    let statuses = loop {
        assert!(started.elapsed() < Duration::from_secs(240), "the flood did not end in 4 minutes");
        peak_kb = peak_kb.max(rss_kb(pid));
        let r = send(client.post(&url).header("x-api-key", &key).body("hello")).await;
        assert_eq!(r.status, 200, "a keyed request during the flood: {r:?}");
        served += 1;
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(20), &mut flood).await {
            break done.unwrap();
        }
    };
    for status in statuses {
        assert!(status.starts_with("HTTP/1.1 403 "), "an unkeyed flood request got {status:?}");
    }
    peak_kb = peak_kb.max(rss_kb(pid));
    eprintln!("keygate: {idle_kb} kB idle, {peak_kb} kB at most; {served} keyed requests served");
    assert!(served > 0);
    assert!(
        peak_kb < RSS_LIMIT_KB,
        "keygate grew from {idle_kb} kB to {peak_kb} kB under {FLOOD} unkeyed {BODY}-byte bodies"
    );
    // Still serving afterwards.
    let r = send(client.post(&url).header("x-api-key", &key).body("hello")).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Issue 25, finding 4: under an open-file limit of 1024 (hard and soft, so keygate cannot raise
/// it), one client that opened 1,050 idle connections made every request time out (accept
/// failed with EMFILE). Now keygate keeps its connections under three quarters of the limit and
/// one address under its share, closing that client's extra connections at once: other clients
/// are served throughout, and the refusals are one summary line, not one line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_idle_connections_under_ulimit_1024_cannot_stop_the_others() {
    const IDLE: usize = 1_050;
    raise_nofile();
    let env = Env::new();
    let yml = env.write("serverless.yml", YML);
    let key = Env::key_value(&env.deploy(&yml, &[]));
    let mut wrapper = std::process::Command::new("/bin/sh");
    wrapper.args(["-c", "ulimit -n 1024 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_keygate")]);
    let srv = env.start_with(env.cmd_of(wrapper), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    assert_eq!(nofile.split_whitespace().nth(3), Some("1024"), "{nofile}");
    let addr = srv.base.trim_start_matches("http://").to_owned();

    // One client (127.0.0.2) opens its connections and sends nothing.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(connect_from(2, &addr).await.unwrap());
    }
    // Others (127.0.0.1) are served meanwhile.
    let client = client();
    let url = srv.url("/dev/upload");
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            send(client.post(&url).header("x-api-key", &key).body("hello")),
        )
        .await
        .expect("a keyed request timed out while one client held idle connections");
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The idle client kept at most its share; the rest were closed at once.
    let mut open = 0;
    for stream in &idle {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(2), stream.peek(&mut byte)).await {
            Err(_) => open += 1,
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(_)) => panic!("an idle connection was sent something"),
        }
    }
    let share = keygate_gateway::MAX_CONNECTIONS_PER_CLIENT;
    assert!(open <= share, "{open} idle connections of one client stayed open (share {share})");
    assert!(open >= share / 2, "only {open} of the client's connections were kept");
    drop(idle);
    let logs = srv.logs();
    let said = logs.matches("a client address holds as many connections as one may").count();
    assert!((1..=2).contains(&said), "{said} lines about the refusals:\n{logs}");
    assert!(!logs.contains("accepting connections failed"), "{logs}");
    srv.stop();
}
