//! wanx against a small loopback server that answers with the real service's recorded bodies
//! (`../shared/recorded/dashscope/`, beside the repository as in CI) and with what no honest service
//! sends: redirects to another origin, endless bodies, results trickled a byte at a time. Each reply
//! is bounded, so a wanx that misbehaves fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::util::Project;

/// One request the fake server saw, and how its reply went.
#[derive(Clone, Debug, Default)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    /// Body bytes written before the reply ended or the client hung up; `None` while replying.
    sent: Option<u64>,
}

/// What the server saw, and a signal for each reply that ends.
#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    ended: Condvar,
}

enum Reply {
    Json(u16, String),
    Redirect(String),
    /// A status and a plain-text body.
    Text(u16, String),
    /// `200` JSON without a length, `prefix` then filler up to `limit` bytes.
    Endless {
        prefix: String,
        limit: u64,
    },
    /// A PNG of `length` bytes announced, one byte every `every`, ending after `limit` bytes.
    Trickle {
        length: u64,
        every: Duration,
        limit: u64,
    },
}

type Handler = dyn Fn(&str, &str, SocketAddr) -> Reply + Send + Sync;

struct Fake {
    addr: SocketAddr,
    log: Arc<Log>,
}

impl Fake {
    fn start(handler: impl Fn(&str, &str, SocketAddr) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let shared = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (handler, log) = (Arc::clone(&handler), Arc::clone(&shared));
                std::thread::spawn(move || serve(stream, addr, &*handler, &log));
            }
        });
        Fake { addr, log }
    }

    fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Every request so far, once each reply has ended (wanx has exited: its connections are
    /// closed, so each reply ends at its next write).
    fn seen(&self) -> Vec<Seen> {
        let seen = self.log.seen.lock().unwrap();
        let (seen, _) = self
            .log
            .ended
            .wait_timeout_while(seen, Duration::from_secs(60), |seen| {
                seen.iter().any(|s| s.sent.is_none())
            })
            .unwrap();
        seen.clone()
    }
}

fn serve(stream: TcpStream, addr: SocketAddr, handler: &Handler, log: &Log) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "authorization" => authorization = Some(value),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let reply = handler(&method, &path, addr);
    let index = {
        let mut seen = log.seen.lock().unwrap();
        seen.push(Seen {
            method,
            path,
            authorization,
            sent: None,
        });
        seen.len() - 1
    };
    let sent = write_reply(stream, reply);
    log.seen.lock().unwrap()[index].sent = Some(sent);
    log.ended.notify_all();
}

/// Writes `reply`; returns the body bytes written before it ended or the client hung up.
fn write_reply(mut stream: TcpStream, reply: Reply) -> u64 {
    let head = |status: u16, extra: &str| {
        format!("HTTP/1.1 {status} X\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        Reply::Json(status, body) => {
            let text = head(
                status,
                &format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            ) + &body;
            let _ = stream.write_all(text.as_bytes());
            body.len() as u64
        }
        Reply::Text(status, body) => {
            let text = head(
                status,
                &format!(
                    "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            ) + &body;
            let _ = stream.write_all(text.as_bytes());
            body.len() as u64
        }
        Reply::Redirect(location) => {
            let text = head(
                307,
                &format!("Location: {location}\r\nContent-Length: 0\r\n"),
            );
            let _ = stream.write_all(text.as_bytes());
            0
        }
        Reply::Endless { prefix, limit } => {
            if stream
                .write_all((head(200, "Content-Type: application/json\r\n") + &prefix).as_bytes())
                .is_err()
            {
                return 0;
            }
            let filler = vec![b'a'; 64 * 1024];
            let mut sent = prefix.len() as u64;
            while sent < limit {
                if stream.write_all(&filler).is_err() {
                    break;
                }
                sent += filler.len() as u64;
            }
            sent
        }
        Reply::Trickle {
            length,
            every,
            limit,
        } => {
            let text = head(
                200,
                &format!("Content-Type: image/png\r\nContent-Length: {length}\r\n"),
            );
            if stream.write_all(text.as_bytes()).is_err() {
                return 0;
            }
            let mut sent = 0;
            while sent < limit {
                if stream
                    .write_all(&[0x89])
                    .and_then(|()| stream.flush())
                    .is_err()
                {
                    break;
                }
                sent += 1;
                std::thread::sleep(every);
            }
            sent
        }
    }
}

/// The body of a recorded answer of the real service.
fn recorded(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/recorded/dashscope")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["body"].to_string()
}

const ONE: &str =
    "[[task]]\nid = \"x\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"x\"\n";

fn submits(fake: &Fake) -> usize {
    fake.seen().iter().filter(|s| s.method == "POST").count()
}

#[test]
fn the_api_key_never_follows_a_redirect_to_another_origin() {
    // The second origin redirects to itself, and records what it is sent.
    let other = Fake::start(|_, path, addr| Reply::Redirect(format!("http://{addr}{path}")));
    for redirect_query in [false, true] {
        let target = other.addr;
        let api = Fake::start(move |method, path, _| {
            let away = Reply::Redirect(format!("http://{target}{path}"));
            match (method, redirect_query) {
                ("POST", true) => Reply::Json(200, recorded("submit_pending.json")),
                _ => away,
            }
        });
        let p = Project::new();
        p.file("plans/a.toml", ONE);
        let run: crate::util::Run = p
            .command(&["build"])
            .env("DASHSCOPE_HTTP_BASE_URL", api.base_url())
            .output()
            .unwrap()
            .into();
        run.status(1);
        assert!(
            run.stderr.contains(&format!("http://{target}/")),
            "the error names where the redirect pointed:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("provider.base_url"), "{}", run.stderr);
        assert_eq!(submits(&api), 1, "a refused submission is not sent again");
    }
    assert!(
        other.seen().iter().all(|s| s.authorization.is_none()),
        "the other origin was sent the key: {:?}",
        other.seen()
    );
}

#[test]
fn an_endless_task_query_answer_is_read_no_further_than_the_cap() {
    const LIMIT: u64 = 256 * 1024 * 1024;
    let api = Fake::start(|method, _, _| match method {
        "POST" => Reply::Json(200, recorded("submit_pending.json")),
        _ => Reply::Endless {
            prefix: "{\"output\":{\"task_status\":\"RUNNING\",\"x\":\"".to_owned(),
            limit: LIMIT,
        },
    });
    let p = Project::new();
    p.file("plans/a.toml", ONE);
    let run: crate::util::Run = p
        .command(&["build"])
        .env("DASHSCOPE_HTTP_BASE_URL", api.base_url())
        .output()
        .unwrap()
        .into();
    run.status(1);
    assert!(run.stderr.contains("exceeded 4 MB"), "{}", run.stderr);
    let queries: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert!(!queries.is_empty());
    for q in &queries {
        // The cap plus what loopback socket buffers hold: far below the endless body's bound.
        let sent = q.sent.unwrap_or(LIMIT);
        assert!(sent < 32 * 1024 * 1024, "read {sent} bytes of an answer");
    }
    assert_eq!(submits(&api), 1, "paid once");
}

#[test]
fn task_timeout_covers_the_download_of_a_trickled_result() {
    let api = Fake::start(|method, path, addr| match (method, path) {
        ("POST", _) => Reply::Json(200, recorded("submit_pending.json")),
        (_, p) if p.starts_with("/result") => Reply::Trickle {
            length: 100_000,
            every: Duration::from_millis(100),
            limit: 300,
        },
        _ => {
            let mut done: serde_json::Value =
                serde_json::from_str(&recorded("task_succeeded_n4.json")).unwrap();
            done["output"]["results"] =
                serde_json::json!([{"url": format!("http://{addr}/result/1.png")}]);
            done["usage"]["image_count"] = 1.into();
            Reply::Json(200, done.to_string())
        }
    });
    let p = Project::new();
    p.file("wanx.toml", "[build]\ntask_timeout = 2\n");
    p.file("plans/a.toml", ONE);
    let run: crate::util::Run = p
        .command(&["build"])
        .env("DASHSCOPE_HTTP_BASE_URL", api.base_url())
        .output()
        .unwrap()
        .into();
    run.status(1);
    assert!(run.stderr.contains("ran out of time"), "{}", run.stderr);
    let downloads: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/result"))
        .collect();
    assert_eq!(downloads.len(), 1, "not retried past the deadline");
    assert!(
        downloads[0].sent.is_some_and(|sent| sent < 300),
        "the download was abandoned at the deadline, not served to its end"
    );
    assert!(
        downloads.iter().all(|d| d.authorization.is_none()),
        "a result URL never gets the key"
    );
    assert_eq!(submits(&api), 1, "paid once");
}

#[test]
fn a_gateway_timeout_on_a_submit_is_looked_up_in_the_task_list_not_resent() {
    let api = Fake::start(|method, path, _| {
        match method {
        "POST" => Reply::Text(504, "<html>504 Gateway Time-out</html>".to_owned()),
        _ if path.starts_with("/api/v1/tasks?") => Reply::Json(
            200,
            serde_json::json!({"total": 0, "data": [], "total_page": 0, "page_no": 1, "request_id": "r", "page_size": 100})
                .to_string(),
        ),
        _ => Reply::Text(404, "no".to_owned()),
    }
    });
    let p = Project::new();
    p.file("plans/a.toml", ONE);
    let run: crate::util::Run = p
        .command(&["build", "--json"])
        .env("DASHSCOPE_HTTP_BASE_URL", api.base_url())
        .output()
        .unwrap()
        .into();
    run.status(1);
    assert_eq!(submits(&api), 1, "not sent again");
    let lists = api
        .seen()
        .iter()
        .filter(|s| {
            s.path.starts_with("/api/v1/tasks?") && s.path.contains("model_name=wan2.2-t2i-flash")
        })
        .count();
    assert!(lists >= 1, "the task list was asked");
    assert_eq!(run.json()["maybe_billed"], 0.14);
    assert_eq!(run.json()["spent"], 0.0);
}
