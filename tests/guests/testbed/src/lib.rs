//! The test suite's guest (server type `testbed`): one handler per behaviour the wire tests
//! check. Control inputs are plain text bodies (`"25"`, `"alice"`), so tests stay readable.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kiwano_guest::{CallContext, Description, Error, Guest, InitInfo, Level, log, notify, request};

static INSTANCE: AtomicU32 = AtomicU32::new(u32::MAX);

struct Testbed;

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn number(body: &[u8]) -> u64 {
    text(body).trim().parse().unwrap_or(0)
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

impl Guest for Testbed {
    fn describe() -> Description {
        let requests = [
            "test.echo", "test.error", "test.errnocode", "test.trap", "test.loop", "test.oom", "test.big", "test.spin",
            "test.instance", "test.bind", "test.uid", "test.get", "test.set", "test.data", "test.setdata", "test.push",
            "test.kick", "test.handshake", "test.addr", "test.log", "test.sessionid", "test.incr",
        ];
        let mut handlers: Vec<_> = requests.iter().map(|r| request(r)).collect();
        handlers.push(notify("test.notify"));
        Description { handlers, affinity: None }
    }

    fn init(info: InitInfo) -> Result<(), Error> {
        INSTANCE.store(info.instance, Ordering::Relaxed);
        log(Level::Debug, &format!("init {} instance {}", info.server_type, info.instance));
        Ok(())
    }

    fn shutdown() {
        log(Level::Info, "testbed shutting down");
    }

    fn handle(ctx: &CallContext, route: String, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        match route.as_str() {
            "test.echo" => Ok(body),
            "test.error" => Err(Error {
                code: "RH-001".into(),
                msg: "custom failure".into(),
                metadata: vec![("failed".into(), "bind".into()), ("route".into(), route.clone())],
            }),
            "test.errnocode" => Err(Error::new("", "no code")),
            "test.trap" => panic!("testbed trap requested"),
            "test.loop" => loop {
                std::hint::spin_loop();
            },
            "test.oom" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                }
            }
            "test.big" => Ok(vec![b'x'; number(&body) as usize]),
            "test.spin" => {
                spin(Duration::from_micros(number(&body)));
                Ok(body)
            }
            "test.instance" => Ok(INSTANCE.load(Ordering::Relaxed).to_string().into_bytes()),
            "test.bind" => ctx.bind(&text(&body)).map(|()| b"bound".to_vec()),
            "test.uid" => Ok(ctx.uid().unwrap_or_default().into_bytes()),
            "test.get" => Ok(ctx.get(&text(&body)).unwrap_or_else(|| "none".into()).into_bytes()),
            "test.set" => {
                let t = text(&body);
                let (k, v) = t.split_once('=').unwrap_or((&t, "null"));
                ctx.set(k, v).map(|()| b"set".to_vec())
            }
            "test.data" => Ok(ctx.data().into_bytes()),
            "test.setdata" => ctx.set_data(&text(&body)).map(|()| b"set".to_vec()),
            "test.push" => ctx.push("onPush", &body).map(|()| b"pushed".to_vec()),
            "test.kick" => ctx.kick().map(|()| b"kicked".to_vec()),
            "test.handshake" => Ok(ctx.handshake().into_bytes()),
            "test.addr" => Ok(ctx.remote_address().into_bytes()),
            "test.log" => {
                log(Level::Info, &format!("guest says {}", text(&body)));
                println!("stdout says {}", text(&body));
                eprintln!("stderr says {}", text(&body));
                Ok(Vec::new())
            }
            "test.sessionid" => Ok(ctx.session_id().to_string().into_bytes()),
            "test.incr" => {
                let n: u64 = ctx.get("count").and_then(|v| v.parse().ok()).unwrap_or(0) + 1;
                ctx.set("count", &n.to_string())?;
                Ok(n.to_string().into_bytes())
            }
            "test.notify" => ctx.push("onNotify", &body).map(|()| Vec::new()),
            other => Err(Error::new("PIT-404", format!("testbed has no {other}"))),
        }
    }

    fn on_session_close(ctx: &CallContext) {
        log(Level::Info, &format!("session {} closed, uid {:?}", ctx.session_id(), ctx.uid()));
    }
}

kiwano_guest::export!(Testbed);
