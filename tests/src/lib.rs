//! Helpers shared by the workspace tests: building guests from source, starting servers on
//! free loopback ports, clients for every transport, TLS material, and captured logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub mod cluster_net;
pub mod demo;
pub mod go_pitaya;
pub mod polyglot;
pub mod process;
pub mod services;

pub use kiwano_client::rawws;

pub use kiwano_client::{Client, ClientError, TlsClient, Transport};
pub use kiwano_protocol::{Message, MessageType, PitayaError, Serializer};
use kiwano_server::config::AcceptorKind;
pub use kiwano_server::{Config, Server};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Builds a guest crate of the workspace for `wasm32-wasip2` (once per test process) and
/// returns the component's path. Guests have their own target dir, so this never waits on the
/// lock of the `cargo test` that runs us.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let target = root().join("target").join("wasm");
    let path = target.join("wasm32-wasip2").join("guest").join(format!("{}.wasm", package.replace('-', "_")));
    if !built.iter().any(|p| p == package) {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["build", "-q", "-p", package, "--target", "wasm32-wasip2", "--profile", "guest", "--target-dir"])
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building guest {package} failed");
        built.push(package.to_owned());
    }
    path
}

/// Builds the testbed guest again with `env` set at compile time (`TESTBED_VERSION`,
/// `TESTBED_FAIL_INIT`), in a target dir of its own named `variant`; returns the component.
pub fn testbed_variant(variant: &str, env: &[(&str, &str)]) -> PathBuf {
    let target = root().join("target").join(format!("wasm-{variant}"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["build", "-q", "-p", "testbed-guest", "--target", "wasm32-wasip2", "--profile", "guest", "--target-dir"])
        .arg(&target)
        .envs(env.iter().copied())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building testbed variant {variant} failed");
    target.join("wasm32-wasip2").join("guest").join("testbed_guest.wasm")
}

/// Captured log output of this test process (all tests of one binary share it).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        if std::env::var_os("KIWANO_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing log subscriber (idempotent).
pub fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,wasmtime=info,cranelift=info,kiwano_trace=off"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// TLS material made for one test run: a CA, and a `localhost` certificate it signed.
pub struct Tls {
    /// Directory holding `cert.pem` and `key.pem`.
    pub dir: PathBuf,
    /// Client settings trusting the CA.
    pub client: TlsClient,
}

/// Generates a CA and a leaf certificate for `localhost` / 127.0.0.1 (once per process).
pub fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Kiwano test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf cert");
        let dir = std::env::temp_dir().join(format!("kiwano-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tls dir");
        std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write key");
        let client = TlsClient::with_roots(&[ca.der().clone()], "localhost").expect("client tls");
        Tls { dir, client }
    })
}

/// Options of a test server: by default the testbed guest as frontend type `testbed`, with
/// every acceptor kind on a free loopback port.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// Extra TOML appended to the config (other sections).
    pub extra: String,
    /// Extra keys for the frontend server type's table.
    pub testbed: String,
    /// The frontend server type's name.
    pub server_type: String,
    /// Its component; `None`: the testbed guest, built from source.
    pub component: Option<PathBuf>,
    /// The compiled-component cache; `None`: one shared by all tests under `target/`.
    pub cache_dir: Option<PathBuf>,
    /// Record metrics as the binary does (Prometheus text at `/metrics` on the HTTP listener,
    /// which `extra` must then configure).
    pub metrics: bool,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self { extra: String::new(), testbed: "instances = 2".into(), server_type: "testbed".into(), component: None, cache_dir: None, metrics: false }
    }
}

/// A server for one test.
pub struct TestServer {
    /// The running server.
    pub server: Server,
    /// The frontend server type.
    pub server_type: String,
}

impl TestServer {
    /// Starts the testbed guest with the default options.
    pub async fn start() -> Self {
        Self::with(TestConfig::default()).await
    }

    /// Starts the testbed guest with `opts`.
    pub async fn with(opts: TestConfig) -> Self {
        init_logs();
        let component = opts.component.clone().unwrap_or_else(|| guest("testbed-guest"));
        let tls = tls();
        let cert = tls.dir.join("cert.pem");
        let key = tls.dir.join("key.pem");
        let cache = opts.cache_dir.clone().unwrap_or_else(|| root().join("target").join("test-cache"));
        let text = format!(
            r#"
[runtime]
cache_dir = "{cache}"
{extra}
[servers.{st}]
frontend = true
component = "{component}"
{testbed}
[[servers.{st}.acceptors]]
kind = "tcp"
address = "127.0.0.1:0"
[[servers.{st}.acceptors]]
kind = "ws"
address = "127.0.0.1:0"
[[servers.{st}.acceptors]]
kind = "tls"
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
[[servers.{st}.acceptors]]
kind = "wss"
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
"#,
            extra = opts.extra,
            cache = cache.display(),
            st = opts.server_type,
            testbed = opts.testbed,
            component = component.display(),
            cert = cert.display(),
            key = key.display(),
        );
        let config = Config::parse(&text, "test.toml", std::iter::empty()).expect("test config");
        let metrics = if opts.metrics {
            let sink = kiwano_telemetry::Prometheus::new(&config.metric_labels()).expect("metrics");
            kiwano_metrics::Metrics::new(Arc::new(sink))
        } else {
            kiwano_metrics::Metrics::disabled()
        };
        let server = Server::start_with(config, Path::new("/"), metrics).await.expect("server starts");
        Self { server, server_type: opts.server_type }
    }

    /// The address of the acceptor for `transport`.
    pub fn addr(&self, transport: Transport) -> String {
        let kind = match transport {
            Transport::Tcp => AcceptorKind::Tcp,
            Transport::Tls => AcceptorKind::Tls,
            Transport::Ws => AcceptorKind::Ws,
            Transport::Wss => AcceptorKind::Wss,
        };
        self.server.address(&self.server_type, kind).expect("acceptor").to_string()
    }

    /// A connected client, without the Pitaya handshake.
    pub async fn raw(&self, transport: Transport) -> Client {
        let tls = matches!(transport, Transport::Tls | Transport::Wss).then(|| &tls().client);
        Client::connect(&self.addr(transport), transport, tls).await.expect("connects")
    }

    /// A connected, handshaken client.
    pub async fn client(&self, transport: Transport) -> Client {
        let mut c = self.raw(transport).await;
        c.handshake(&serde_json::json!({"sys": {"platform": "test", "libVersion": "0.1"}, "user": {"name": "tester"}}))
            .await
            .expect("handshake");
        c
    }
}

/// All four transports.
pub const TRANSPORTS: [Transport; 4] = [Transport::Tcp, Transport::Ws, Transport::Tls, Transport::Wss];

/// Waits for the server to close the connection (reading and discarding until then); returns
/// what was read before, and panics after `within`.
pub async fn expect_closed(c: &mut Client, within: Duration) -> Vec<kiwano_protocol::packet::Packet> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(within, async {
        loop {
            match c.recv_packet().await {
                Ok(Some(p)) => got.push(p),
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection not closed within {within:?}; read {got:?}");
    got
}

/// An HTTP response as [`http_request`] reads it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (`method` and raw `target`, as a client would put them on the
/// wire) with `Connection: close` and reads the whole response.
pub async fn http_request(addr: std::net::SocketAddr, method: &str, target: &str) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("http connects");
    let req = format!("{method} {target} HTTP/1.1\r\nHost: kiwano\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request sent");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("response within 10 s").expect("response read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse { status, headers, body: raw[split + 4..].to_vec() }
}

/// Waits until `cond` holds, checking every few milliseconds; panics naming `what` after
/// `within`. Tests wait on conditions like this, never on the machine being fast.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not true within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the future that `cond` makes yields true, trying again every few milliseconds;
/// panics naming `what` after `within`.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut cond: impl FnMut() -> F) {
    let start = tokio::time::Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "{what}: not true within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The Pitaya error `code`, `msg` and `metadata` pairs, to compare with what a client got.
pub fn pe(code: &str, msg: &str, meta: &[(&str, &str)]) -> PitayaError {
    let mut e = PitayaError::new(code, msg);
    for (k, v) in meta {
        e.metadata.insert((*k).into(), (*v).into());
    }
    e
}

/// An error response's decoded error object (JSON serializer).
pub fn error_of(m: &Message) -> PitayaError {
    assert!(m.error, "expected an error response, got {:?}", String::from_utf8_lossy(&m.data));
    PitayaError::decode(&m.data, Serializer::Json).expect("error object")
}

/// Requests `route` with a JSON body and returns the JSON response, failing on an error response.
pub async fn ok_json(c: &mut Client, route: &str, body: serde_json::Value) -> serde_json::Value {
    let r = c.request(route, body.to_string().as_bytes()).await.unwrap();
    assert!(!r.error, "{route} {body}: {}", String::from_utf8_lossy(&r.data));
    serde_json::from_slice(&r.data).unwrap()
}

/// Requests `route` with a JSON body and returns the error object of its (error) response.
pub async fn err_json(c: &mut Client, route: &str, body: serde_json::Value) -> PitayaError {
    error_of(&c.request(route, body.to_string().as_bytes()).await.unwrap())
}

/// A project of `examples/`, started in-process with every acceptor (and the HTTP listener)
/// moved to a free loopback port.
pub async fn start_example(name: &str) -> Server {
    start_example_with(name, &[]).await
}

/// Like [`start_example`], with config overrides given as `KIWANO_*` variables would be
/// (`("KIWANO_PROTOCOL_HEARTBEAT_INTERVAL", "1s")`), without touching the environment.
pub async fn start_example_with(name: &str, overrides: &[(&str, &str)]) -> Server {
    start_project_with(&root().join("examples").join(name), overrides).await
}

/// Builds and starts a test project of `tests/projects/<name>` as [`start_example`] does.
pub async fn start_test_project(name: &str) -> Server {
    start_project_with(&root().join("tests").join("projects").join(name), &[]).await
}

/// Builds and starts the project in `project` (its guests built if needed), every acceptor on
/// a free loopback port, with config overrides given as `KIWANO_*` variables would be.
pub async fn start_project_with(project: &Path, overrides: &[(&str, &str)]) -> Server {
    start_project_metrics(project, overrides, false).await.0
}

/// [`start_project_with`], recording metrics as the binary does when `metrics` is true: the
/// handle renders what `/metrics` would serve.
pub async fn start_project_metrics(project: &Path, overrides: &[(&str, &str)], metrics: bool) -> (Server, kiwano_metrics::Metrics) {
    init_logs();
    let text = std::fs::read_to_string(project.join("kiwano.toml")).expect("example config");
    let env = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let mut config = Config::parse(&text, "kiwano.toml", env).expect("example config parses");
    for st in config.servers.values_mut() {
        for a in &mut st.acceptors {
            a.address = "127.0.0.1:0".into();
        }
    }
    if !config.app.http.is_empty() {
        config.app.http = "127.0.0.1:0".into();
    }
    kiwano_server::project::build_all(project, &config).expect("project builds");
    let handle = if metrics {
        let sink = kiwano_telemetry::Prometheus::new(&config.metric_labels()).expect("metrics");
        kiwano_metrics::Metrics::new(Arc::new(sink))
    } else {
        kiwano_metrics::Metrics::disabled()
    };
    let server = Server::start_with(config, project, handle.clone()).await.expect("project starts");
    (server, handle)
}
