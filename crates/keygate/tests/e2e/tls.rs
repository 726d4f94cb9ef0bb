//! HTTPS on both listeners (`--tls-cert`, `--tls-key`): the 403/200 story over TLS, the admin
//! API and the console's `Secure` cookie, and SIGHUP swapping the certificate for new
//! connections while an open one goes on with its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// A test CA, and leaf certificates for `localhost` it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "keygate test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes a leaf for `localhost` named `name` to `dir`: (cert file, key file, its DER).
    fn leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_file, key_file) =
            (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file, cert.der().clone())
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        self.connector_offering(&[b"http/1.1"])
    }

    /// A client trusting the CA, offering `alpn`.
    fn connector_offering(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// A TLS connection to `base` (`https://127.0.0.1:PORT`) verified against the CA as `localhost`.
async fn connect(ca: &Ca, base: &str) -> TlsStream<TcpStream> {
    let addr = base.strip_prefix("https://").expect("an https:// address");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    ca.connector().connect(name, tcp).await.expect("TLS handshake")
}

/// One GET over HTTP/2 (ALPN `h2`, which the server must choose): (status, body).
async fn h2_get(ca: &Ca, base: &str, path: &str, key: Option<&str>) -> (u16, String) {
    use http_body_util::BodyExt;
    let tcp = TcpStream::connect(base.strip_prefix("https://").unwrap()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ca.connector_offering(&[b"h2", b"http/1.1"]).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the traffic listener offers h2");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(format!("https://localhost{path}"));
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let res = send.send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap());
    let res = res.await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The certificate the server presented on `s`.
fn served(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// One keep-alive HTTP/1.1 exchange on `s`: (status, head, body).
async fn exchange(s: &mut TlsStream<TcpStream>, request: &str) -> (u16, String, String) {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = text[end + 4..end + 4 + length].to_owned();
                return (status, head.to_owned(), body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str, key: Option<&str>) -> String {
    let key = key.map(|k| format!("x-api-key: {k}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{key}\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_the_key_story_and_sighup_swaps_the_certificate() {
    let env = Env::new();
    let key = Env::key_value(&env.deploy(&example_yml(), &[]));
    let token = env.json(&["admin", "token", "create"])["token"].as_str().unwrap().to_owned();
    let ca = Ca::new();
    let (cert_file, key_file, first) = ca.leaf(env.path(), "first");
    let (c, k) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let srv =
        env.start(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", c, "--tls-key", k], &[]);
    assert!(srv.base.starts_with("https://") && srv.admin.starts_with("https://"), "{}", srv.base);

    let mut open = connect(&ca, &srv.base).await;
    assert_eq!(served(&open), first);
    assert_eq!(open.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, _, body) = exchange(&mut open, &get("/dev/candidates", None)).await;
    assert_eq!((status, body.as_str()), (403, r#"{"message":"Forbidden"}"#));
    let (status, _, body) = exchange(&mut open, &get("/dev/candidates", Some(&key))).await;
    assert_eq!(status, 200, "{body}");

    // HTTP/2 for a client that negotiates it: the same story.
    let (status, body) = h2_get(&ca, &srv.base, "/dev/candidates", None).await;
    assert_eq!((status, body.as_str()), (403, r#"{"message":"Forbidden"}"#));
    let (status, body) = h2_get(&ca, &srv.base, "/dev/candidates", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    // The admin listener speaks HTTP/1.1 only.
    let tcp = TcpStream::connect(srv.admin.strip_prefix("https://").unwrap()).await.unwrap();
    let admin_alpn = ca
        .connector_offering(&[b"h2", b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(admin_alpn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // The admin listener: its API, and the console's cookie marked Secure.
    let mut admin = connect(&ca, &srv.admin).await;
    let (status, _, body) = exchange(&mut admin, &get("/healthz", None)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let form = format!("token={token}");
    let signin = format!(
        "POST /console/signin HTTP/1.1\r\nhost: localhost\r\ncontent-type: \
         application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{form}",
        form.len()
    );
    let (status, head, _) = exchange(&mut admin, &signin).await;
    assert_eq!(status, 303, "{head}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(srv.base.strip_prefix("https://").unwrap()).await.unwrap();
    plain.write_all(get("/dev/candidates", Some(&key)).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1"), "{got:?}");

    // Renewal: new files in place, then SIGHUP.
    let (new_cert, new_key, second) = ca.leaf(env.path(), "second");
    std::fs::rename(&new_cert, &cert_file).unwrap();
    std::fs::rename(&new_key, &key_file).unwrap();
    let hup = || {
        let pid = srv.pid().to_string();
        assert!(
            std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success()
        );
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = connect(&ca, &srv.base).await;
        if served(&fresh) == second {
            let (status, _, _) = exchange(&mut fresh, &get("/dev/candidates", Some(&key))).await;
            assert_eq!(status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fresh_admin = connect(&ca, &srv.admin).await;
    assert_eq!(served(&fresh_admin), second, "the admin listener serves the new one too");
    assert_eq!(exchange(&mut fresh_admin, &get("/healthz", None)).await.0, 200);
    // The connection opened before goes on, with the certificate it was opened with.
    let (status, _, _) = exchange(&mut open, &get("/dev/candidates", Some(&key))).await;
    assert_eq!(status, 200);
    assert_eq!(served(&open), first);

    // A broken renewal keeps what is served, and says why.
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.logs().contains("cannot reload the TLS certificate") {
        assert!(Instant::now() < deadline, "no reload error logged:\n{}", srv.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = connect(&ca, &srv.base).await;
    assert_eq!(served(&after), second);
    assert_eq!(exchange(&mut after, &get("/dev/candidates", None)).await.0, 403);
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(!logs.contains("not base64"), "key file contents in the logs");

    // --no-http2: HTTP/1.1 only, whatever the client offers.
    let (h1_cert, h1_key, _) = ca.leaf(env.path(), "h1only");
    let (hc, hk) = (h1_cert.to_str().unwrap(), h1_key.to_str().unwrap());
    let srv = env.start(
        &["serve", "--listen", "127.0.0.1:0", "--tls-cert", hc, "--tls-key", hk, "--no-http2"],
        &[],
    );
    let tcp = TcpStream::connect(srv.base.strip_prefix("https://").unwrap()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let offered = ca.connector_offering(&[b"h2", b"http/1.1"]).connect(name, tcp).await.unwrap();
    assert_eq!(offered.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    srv.stop();

    // Unusable files stop keygate at start, saying which and what to do.
    let (other_cert, _, _) = ca.leaf(env.path(), "other");
    let oc = other_cert.to_str().unwrap();
    for (cert, key, said) in [
        ("/nonexistent.crt", oc, "cannot read the TLS certificate /nonexistent.crt"),
        (oc, oc, "holds no private key"),
        (oc, k, "not valid PEM"),
    ] {
        let out =
            env.run(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{said:?} not in {err}");
    }
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--tls-cert", oc]);
    assert!(!out.status.success(), "a certificate without its key is refused");
}

/// An HTTPS upstream answering `hello from <name>` on keep-alive connections with the
/// certificate in `cert` / `key`: its port.
async fn https_upstream(cert: &Path, key: &Path, name: &'static str) -> u16 {
    let tls = keygate_http::Tls::load(cert, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut s) = tls.accept(tcp).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        let body = format!("hello from {name}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() || s.flush().await.is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    port
}

/// `http-proxy` to `https://` upstreams: verified against the system's roots (here the test
/// CA, through `SSL_CERT_FILE`); a certificate for another name, or self-signed, is a 502 whose
/// reason is logged; `tlsConfig.insecureSkipVerification` accepts the self-signed one.
#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_are_verified_and_a_bad_certificate_is_a_logged_502() {
    let env = Env::new();
    let ca = Ca::new();
    let ca_file = env.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let (good_cert, good_key, _) = ca.leaf(env.path(), "localhost-leaf");
    let good = https_upstream(&good_cert, &good_key, "good").await;
    // Signed by the trusted CA, but for another name.
    let mut params = CertificateParams::new(vec!["wrong.example".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "wrong.example");
    let wrong_key = KeyPair::generate().unwrap();
    let wrong_cert = params.signed_by(&wrong_key, &ca.cert, &ca.key).unwrap();
    let (wc, wk) = (env.path().join("wrong.crt"), env.path().join("wrong.key"));
    std::fs::write(&wc, wrong_cert.pem()).unwrap();
    std::fs::write(&wk, wrong_key.serialize_pem()).unwrap();
    let wrong = https_upstream(&wc, &wk, "wrong").await;
    // Self-signed, for the right name.
    let own = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (sc, sk) = (env.path().join("self.crt"), env.path().join("self.key"));
    std::fs::write(&sc, own.cert.pem()).unwrap();
    std::fs::write(&sk, own.key_pair.serialize_pem()).unwrap();
    let selfsigned = https_upstream(&sc, &sk, "self-signed").await;

    let yml = env.write(
        "serverless.yml",
        &format!(
            "service: tlsup
provider:
  name: aws
  runtime: provided.al2023
functions:
  proxied:
    handler: unused
    events:
      - http: {{path: good, method: get, integration: http-proxy, request: {{uri: 'https://localhost:{good}/hello'}}}}
      - http: {{path: wrongname, method: get, integration: http-proxy, request: {{uri: 'https://localhost:{wrong}/hello'}}}}
      - http: {{path: selfsigned, method: get, integration: http-proxy, request: {{uri: 'https://localhost:{selfsigned}/hello'}}}}
      - http:
          path: selfsigned-allowed
          method: get
          integration: http-proxy
          request:
            uri: 'https://localhost:{selfsigned}/hello'
            tlsConfig:
              insecureSkipVerification: true
"
        ),
    );
    env.deploy(&yml, &[]);
    let ca_path = ca_file.to_str().unwrap();
    let srv = env.start(&["serve", "--listen", "127.0.0.1:0"], &[("SSL_CERT_FILE", ca_path)]);
    for _ in 0..3 {
        let r = crate::support::get(&srv.url("/dev/good"), None).await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello from good"), "{r:?}");
    }
    let r = crate::support::get(&srv.url("/dev/selfsigned-allowed"), None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello from self-signed"), "{r:?}");
    for path in ["/dev/wrongname", "/dev/selfsigned"] {
        let r = crate::support::get(&srv.url(path), None).await;
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert_eq!(r.body, r#"{"message": "Internal server error"}"#, "{path}");
    }
    let log = srv.log.clone();
    srv.stop();
    let logs = std::fs::read_to_string(log).unwrap();
    let failed: Vec<&str> =
        logs.lines().filter(|l| l.contains("http-proxy upstream failed")).collect();
    assert!(
        failed.iter().any(|l| l.contains(&format!("localhost:{wrong}"))
            && l.contains("certificate not valid for name")),
        "{failed:#?}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains(&format!("localhost:{selfsigned}")) && l.contains("UnknownIssuer")),
        "{failed:#?}"
    );
}
