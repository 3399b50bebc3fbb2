//! The compiled-component cache: the second start compiles nothing, a corrupt entry is
//! recompiled, and servers sharing the directory do not trip on each other.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use kiwano_tests::*;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiwano-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn start(cache: &PathBuf) -> TestServer {
    TestServer::with(TestConfig { cache_dir: Some(cache.clone()), ..Default::default() }).await
}

fn counts(s: &TestServer) -> (u64, u64) {
    let st = s.server.runtime().stats();
    (st.compiled.load(Ordering::Relaxed), st.cache_hits.load(Ordering::Relaxed))
}

async fn serves(s: &TestServer) {
    let mut c = s.client(Transport::Tcp).await;
    assert_eq!(&c.request("test.echo", b"cached").await.unwrap().data[..], b"cached");
}

fn entries(dir: &PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Replaces `file` with `bytes` by a rename, as every writer of the cache does.
fn replace(file: &std::path::Path, bytes: &[u8]) {
    let tmp = file.with_extension("corrupt");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[tokio::test]
async fn second_start_compiles_nothing_and_corrupt_entries_are_recompiled() {
    let dir = fresh_dir("restart");
    let first = start(&dir).await;
    assert_eq!(counts(&first), (1, 0), "first start compiles");
    serves(&first).await;
    first.server.shutdown().await;
    assert_eq!(entries(&dir).len(), 1);

    let second = start(&dir).await;
    assert_eq!(counts(&second), (0, 1), "second start loads from the cache");
    serves(&second).await;
    second.server.shutdown().await;
    assert!(logs().contains("loaded compiled component from cache"));

    // Corrupt the entry: it is recompiled, and replaced by a good one. (The bad bytes replace
    // the file rather than overwrite it: a process that loaded the entry maps that file, and
    // entries are never written in place.)
    let entry = entries(&dir).remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    replace(&entry, &bytes);
    let third = start(&dir).await;
    assert_eq!(counts(&third), (1, 0), "a corrupt entry is recompiled");
    serves(&third).await;
    third.server.shutdown().await;
    assert!(logs().contains("compiled cache entry fails its checksum: recompiling"));

    // Emptied: the same.
    replace(&entry, b"");
    let fourth = start(&dir).await;
    assert_eq!(counts(&fourth), (1, 0));
    fourth.server.shutdown().await;
    let fifth = start(&dir).await;
    assert_eq!(counts(&fifth), (0, 1), "the rewritten entry is good");
    fifth.server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn servers_sharing_the_directory_start_together() {
    let dir = fresh_dir("shared");
    let (a, b) = tokio::join!(start(&dir), start(&dir));
    serves(&a).await;
    serves(&b).await;
    // Whoever wrote last, the entry is whole: a later start hits it, and no temp files remain.
    let c = start(&dir).await;
    assert_eq!(counts(&c), (0, 1));
    serves(&c).await;
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
