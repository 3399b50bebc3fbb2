//! The HTTP listener as a browser and a scanner see it: the web client's files, nothing outside
//! the web root (symlinks leaving it, `..`), no hidden files, `nosniff` on every response.

use std::path::PathBuf;

use kiwano_tests::*;

/// A web root with a page, a script, hidden files, and symlinks in and out of it.
fn web_root() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiwano-http-{}", std::process::id()));
    let web = dir.join("web");
    std::fs::create_dir_all(web.join("js")).unwrap();
    std::fs::create_dir_all(web.join(".git")).unwrap();
    std::fs::write(web.join("index.html"), "<!doctype html><title>game</title>").unwrap();
    std::fs::write(web.join("js/app.js"), "console.log('game')").unwrap();
    std::fs::write(web.join(".env"), "SECRET=1").unwrap();
    std::fs::write(web.join(".git/config"), "[core]").unwrap();
    std::fs::write(dir.join("kiwano.toml"), "secret = true").unwrap();
    let _ = std::os::unix::fs::symlink("/etc/passwd", web.join("passwd"));
    let _ = std::os::unix::fs::symlink(web.join("js/app.js"), web.join("app.js"));
    web
}

#[tokio::test]
async fn files_of_the_web_root_and_nothing_else() {
    let web = web_root();
    let s = TestServer::with(TestConfig {
        extra: format!("[app]\nhttp = \"127.0.0.1:0\"\nweb_root = \"{}\"\n", web.display()),
        ..Default::default()
    })
    .await;
    let http = s.server.http_address().unwrap();
    let index = http_request(http, "GET", "/web/").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<!doctype html><title>game</title>");
    assert!(index.header("content-type").unwrap_or_default().starts_with("text/html"));
    let js = http_request(http, "GET", "/web/js/app.js").await;
    assert_eq!((js.status, js.text().as_str()), (200, "console.log('game')"));
    assert!(js.header("content-type").unwrap_or_default().starts_with("text/javascript"), "{js:?}");
    // A symlink that stays inside the root is followed.
    assert_eq!(http_request(http, "GET", "/web/app.js").await.status, 200);
    let head = http_request(http, "HEAD", "/web/js/app.js").await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    for path in [
        "/web/passwd",
        "/web/.env",
        "/web/.git/config",
        "/web/../kiwano.toml",
        "/web/%2e%2e/kiwano.toml",
        "/web//etc/passwd",
        "/webindex.html",
        "/web/js/../.env",
        "/web/nope.js",
    ] {
        let r = http_request(http, "GET", path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("root:") && !r.text().contains("SECRET"), "{path}");
    }
    assert_eq!(http_request(http, "POST", "/web/").await.status, 405);
    assert_eq!(http_request(http, "GET", "/").await.header("location"), Some("/web/"));
    for path in ["/web/", "/web/js/app.js", "/web/.env", "/"] {
        assert_eq!(http_request(http, "GET", path).await.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    s.server.shutdown().await;
}
