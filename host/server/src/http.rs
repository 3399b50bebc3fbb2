//! The process's HTTP listener (`app.http`), on axum: the game's web client under `/web/`, and
//! the one place later endpoints (metrics, health, admin) attach to ([`router`] returns the
//! router to extend).
//!
//! Static files are served by tower-http's `ServeFile` (content types, `HEAD`, ranges,
//! conditional requests) behind Kiwano's own checks: a request path is made of plain names
//! (no `..`, no empty or hidden segment: `.env`, `.git/` are never served), and the file it
//! names, once every symlink is resolved, must still be inside the web root. Every response
//! carries `X-Content-Type-Options: nosniff`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tower_http::set_header::SetResponseHeaderLayer;

/// The web root, resolved once.
struct Web {
    /// The root as configured (for messages).
    root: PathBuf,
    /// The root with its symlinks resolved; `None` if it does not exist (every file is then
    /// 404).
    canonical: Option<PathBuf>,
}

/// The HTTP routes: `/` and `/web` redirect to `/web/`, `/web/…` serves files of `root`.
pub fn router(root: PathBuf) -> Router {
    let canonical = std::fs::canonicalize(&root).ok();
    if canonical.is_none() {
        tracing::warn!(root = %root.display(), "the web root does not exist: /web/ answers 404");
    }
    let web = Arc::new(Web { root, canonical });
    Router::new()
        .route("/", get(|| async { Redirect::permanent("/web/") }))
        .route("/web", get(|| async { Redirect::permanent("/web/") }))
        .route("/web/", get(|State(web): State<Arc<Web>>, req: Request| async move { serve(&web, "", req).await }))
        .route(
            "/web/{*path}",
            get(|State(web): State<Arc<Web>>, UrlPath(path): UrlPath<String>, req: Request| async move { serve(&web, &path, req).await }),
        )
        .with_state(web)
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// The file `path` (relative, as the URL gives it) names under the web root, if it may be
/// served.
fn resolve(web: &Web, path: &str) -> Option<PathBuf> {
    let root = web.canonical.as_ref()?;
    let mut file = root.clone();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => file.push(part),
            _ => return None,
        }
    }
    // Symlinks are followed only as far as the root.
    let mut real = std::fs::canonicalize(&file).ok()?;
    if real.is_dir() {
        real = std::fs::canonicalize(real.join("index.html")).ok()?;
    }
    (real.starts_with(root) && real.is_file()).then_some(real)
}

async fn serve(web: &Web, path: &str, req: Request) -> Response {
    let path = path.trim_end_matches('/');
    let Some(file) = resolve(web, path) else {
        tracing::debug!(root = %web.root.display(), path, "not served");
        return not_found();
    };
    match ServeFile::new(file).oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    }
}

/// What the admin endpoints act on: the server types' versions.
pub trait Admin: Send + Sync + 'static {
    /// The version each server type serves.
    fn versions(&self) -> std::collections::BTreeMap<String, u64>;
    /// Hot-reloads `server_type`: the new version's number, or why it was refused (`409` for a
    /// reload already under way or an unknown type, `422` for a component refused).
    fn reload(&self, server_type: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, (StatusCode, String)>> + Send>>;
}

/// `router` with the admin endpoints, for callers with `Authorization: Bearer <token>`:
/// `POST /admin/reload/{type}` and `GET /admin/versions` (JSON).
pub fn with_admin(router: Router, admin: Arc<dyn Admin>, token: String) -> Router {
    let token = Arc::new(format!("Bearer {token}"));
    let authorized = move |req: &Request| req.headers().get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == token.as_bytes());
    let (a1, a2) = (authorized.clone(), authorized);
    let admin2 = admin.clone();
    router
        .route(
            "/admin/versions",
            get(move |req: Request| async move {
                if !a1(&req) {
                    return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
                }
                json(&admin.versions())
            }),
        )
        .route(
            "/admin/reload/{server_type}",
            axum::routing::post(move |UrlPath(server_type): UrlPath<String>, req: Request| async move {
                if !a2(&req) {
                    return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
                }
                match admin2.reload(server_type.clone()).await {
                    Ok(version) => json(&serde_json::json!({"server_type": server_type, "version": version})),
                    Err((status, why)) => (status, format!("{why}\n")).into_response(),
                }
            }),
        )
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// What `/readyz` reports.
pub trait HealthSource: Send + Sync + 'static {
    /// Why the process should not be sent players now; `None`: ready.
    fn not_ready(&self) -> Option<String>;
}

/// `router` with the probes Kubernetes needs: `GET /healthz` (`200 ok` while the process
/// serves) and `GET /readyz` (`200 ready`, or `503` and the reason: starting, draining, NATS
/// lost, not registered).
pub fn with_health(router: Router, source: Arc<dyn HealthSource>) -> Router {
    router.route("/healthz", get(|| async { "ok\n" })).route(
        "/readyz",
        get(move || async move {
            match source.not_ready() {
                None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
                Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
            }
        }),
    )
}

/// What `/metrics` serves.
pub trait MetricsSource: Send + Sync + 'static {
    /// The metrics in the exporter's format, with its content type; `None`: none recorded.
    fn render(&self) -> Option<(&'static str, String)>;
}

/// `router` with `GET /metrics` (Prometheus text exposition).
pub fn with_metrics(router: Router, source: Arc<dyn MetricsSource>) -> Router {
    router.route(
        "/metrics",
        get(move || async move {
            match source.render() {
                Some((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
                None => not_found(),
            }
        }),
    )
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve_http(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let served = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = served.await {
        tracing::warn!("http listener failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_root_and_hidden_files_stay_hidden() {
        let dir = std::env::temp_dir().join(format!("kiwano-http-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("web/sub")).unwrap();
        std::fs::write(dir.join("web/index.html"), "home").unwrap();
        std::fs::write(dir.join("web/sub/app.js"), "js").unwrap();
        std::fs::write(dir.join("web/.env"), "secret").unwrap();
        std::fs::write(dir.join("outside.txt"), "outside").unwrap();
        let _ = std::os::unix::fs::symlink(dir.join("outside.txt"), dir.join("web/escape.txt"));
        let _ = std::os::unix::fs::symlink(dir.join("web/sub/app.js"), dir.join("web/inside.js"));
        let web = Web { root: dir.join("web"), canonical: std::fs::canonicalize(dir.join("web")).ok() };
        let root = web.canonical.clone().unwrap();
        assert_eq!(resolve(&web, ""), Some(root.join("index.html")));
        assert_eq!(resolve(&web, "sub/app.js"), Some(root.join("sub/app.js")));
        assert_eq!(resolve(&web, "inside.js"), Some(root.join("sub/app.js")), "a symlink within the root");
        assert_eq!(resolve(&web, "escape.txt"), None, "a symlink leaving the root");
        assert_eq!(resolve(&web, ".env"), None);
        assert_eq!(resolve(&web, "../outside.txt"), None);
        assert_eq!(resolve(&web, "sub/../../outside.txt"), None);
        assert_eq!(resolve(&web, "/etc/passwd"), None);
        assert_eq!(resolve(&web, "nope.js"), None);
    }
}
