//! The process's small HTTP listener: static files of the game's web client under `/web/`.
//! GET and HEAD only, one request per connection, paths confined to the web root.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;

/// Serves `root` under `/web/` until `shutdown`.
pub async fn serve(listener: TcpListener, root: PathBuf, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let root = root.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, &root)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The file for a request path, if it is under `/web/` and stays inside `root`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let rest = path.strip_prefix("/web")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let mut file = root.to_path_buf();
    for c in Path::new(rest).components() {
        match c {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    Some(file)
}

async fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8], head_only: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if !head_only {
        let _ = stream.write_all(body).await;
    }
    let _ = stream.shutdown().await;
}

async fn handle(mut stream: TcpStream, root: &Path) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"", false).await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"method not allowed\n", false).await;
    }
    let head_only = method == "HEAD";
    if target == "/" || target == "/web" {
        let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: /web/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(moved.as_bytes()).await;
        return;
    }
    match resolve(root, target) {
        Some(file) => match tokio::fs::read(&file).await {
            Ok(body) => respond(&mut stream, "200 OK", content_type(&file), &body, head_only).await,
            Err(_) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n", head_only).await,
        },
        None => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n", head_only).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, "/web/app.js?v=1"), Some(PathBuf::from("/srv/web/app.js")));
        assert_eq!(resolve(root, "/web/../secret"), None);
        assert_eq!(resolve(root, "/other"), None);
        assert_eq!(resolve(root, "/web//etc/passwd"), None);
    }
}
