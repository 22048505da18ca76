//! `Live`: the gallery of `wanx watch --serve`, served over HTTP (hyper, as the emulator is) on
//! loopback unless an address is given. It follows the watch's own JSON events (a
//! [`Sink`](crate::watch::sink::Sink) on its reporter): a `plan` marks the tasks to generate, a
//! `submitted` marks one generating, a `result` or `built` gathers the gallery again (as `wanx
//! gallery` does, sending nothing) and every card whose HTML changed goes to the open pages as a
//! server-sent event, which replaces it in place; the totals line carries the session's running
//! spend.
//!
//! Routes: `/` the page, `/events` the event stream (`card`, `remove`, `order`, `totals`; `?v=N`
//! resends every card when the page is older than the server's state), `/thumbs/HASH.jpg` (made on
//! first request, cached in `.wanx/thumbs/`), `/images/HASH.EXT`. Images are named by their blake3,
//! so they are served as immutable.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::build::Project;
use crate::cli::Selection;
use crate::error::{Error, Result};
use crate::gallery::files::{thumbnail, thumbs_dir};
use crate::gallery::page;
use crate::gallery::{self, Card, Gallery, Image};
use crate::money::Money;
use crate::term::printer::Printer;
use crate::watch::sink::Sink;

/// Events buffered per page; a page that falls further behind gets every card again.
const BACKLOG: usize = 1024;
/// A comment line on idle event streams, so proxies and browsers keep them open.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Reply = Response<UnsyncBoxBody<Bytes, Infallible>>;

/// The live gallery server.
pub struct Live {
    addr: SocketAddr,
    dir: Option<PathBuf>,
    selection: Selection,
    events: broadcast::Sender<Arc<str>>,
    refresh: Notify,
    state: Mutex<State>,
}

/// What the pages were last sent, and what the watch has said since.
#[derive(Default)]
struct State {
    gallery: Option<Gallery>,
    /// Card HTML by task id, as last sent.
    rendered: HashMap<String, String>,
    order: Vec<String>,
    totals: String,
    /// Bumped on every round of events; a page knows the version it was rendered at.
    version: u64,
    /// Live statuses from the watch's events (`planned`, `generating`), by task id.
    marks: HashMap<String, (&'static str, String)>,
    /// Failures seen, by task id, until the task succeeds.
    failed: HashMap<String, String>,
    /// Images known to the gallery, by hash: what `/thumbs` and `/images` may serve.
    images: HashMap<String, Image>,
    thumbs: PathBuf,
    collect: bool,
    session_spent: Money,
    session_saved: Money,
}

impl Live {
    /// Binds `addr` (see [`parse_addr`]) and serves on the current runtime.
    pub async fn start(addr: &str, dir: Option<&Path>, selection: &Selection) -> Result<Arc<Live>> {
        let wanted = parse_addr(addr).map_err(|message| Error::Usage {
            message,
            hint: Some(
                "give `--serve` a host, a host:port or a port, e.g. `--serve 127.0.0.1:8080`"
                    .to_owned(),
            ),
        })?;
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|e| Error::Other(format!("could not listen on {wanted}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("could not listen on {wanted}: {e}")))?;
        let live = Arc::new(Live {
            addr,
            dir: dir.map(Path::to_path_buf),
            selection: selection.clone(),
            events: broadcast::channel(BACKLOG).0,
            refresh: Notify::new(),
            state: Mutex::new(State {
                collect: true,
                ..State::default()
            }),
        });
        tokio::spawn(accept(listener, Arc::clone(&live)));
        tokio::spawn(refresher(Arc::clone(&live)));
        Ok(live)
    }

    /// The page's URL; an unspecified address is reached through loopback.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            ip if !ip.is_unspecified() => ip,
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        format!("http://{}/", SocketAddr::new(ip, self.addr.port()))
    }

    /// The receiver of the watch's events.
    pub fn sink(self: &Arc<Live>) -> Sink {
        let live = Arc::clone(self);
        Sink(Arc::new(move |event: &Value| live.event(event)))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain data behind: keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in one watch event; never blocks on I/O (the refresher does the work).
    fn event(&self, event: &Value) {
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let mut state = self.state();
        match event["event"].as_str().unwrap_or_default() {
            "plan" => {
                for task in event["generate"].as_array().into_iter().flatten() {
                    if let Some(id) = task["id"].as_str() {
                        let cost = Money::from_yuan(task["cost"].as_f64().unwrap_or(0.0));
                        state
                            .marks
                            .insert(id.to_owned(), ("planned", format!("to generate, {cost}")));
                    }
                }
                for task in event["restore"].as_array().into_iter().flatten() {
                    if let Some(id) = task.as_str() {
                        state.marks.insert(
                            id.to_owned(),
                            ("planned", "to restore from the cache, free".to_owned()),
                        );
                    }
                }
                state.collect = true;
            }
            "submitted" => {
                state.marks.insert(
                    id,
                    ("generating", "submitted: generating (paid for)".to_owned()),
                );
            }
            "result" => {
                state.marks.remove(&id);
                state.session_spent += Money::from_yuan(event["cost"].as_f64().unwrap_or(0.0));
                match event["status"].as_str() {
                    Some("failed") => {
                        let error = event["error"].as_str().unwrap_or("failed").to_owned();
                        state.failed.insert(id, error);
                    }
                    Some("generated" | "restored") => {
                        state.failed.remove(&id);
                    }
                    _ => {}
                }
                state.collect = true;
            }
            "built" => {
                state.marks.clear();
                let session = &event["session"];
                state.session_spent = Money::from_yuan(session["spent"].as_f64().unwrap_or(0.0));
                state.session_saved = Money::from_yuan(session["saved"].as_f64().unwrap_or(0.0));
                state.collect = true;
            }
            _ => return,
        }
        drop(state);
        self.refresh.notify_one();
    }

    /// Gathers the gallery again if an event asked for it, then sends what changed.
    async fn round(self: &Arc<Live>) {
        let (collect, failed) = {
            let mut state = self.state();
            (std::mem::take(&mut state.collect), state.failed.clone())
        };
        if collect {
            let live = Arc::clone(self);
            let gathered = tokio::task::spawn_blocking(move || live.collect(&failed)).await;
            // A save that breaks the project: the watch reports it; the page keeps the last good one.
            if let Ok(Ok((gallery, thumbs))) = gathered {
                let mut state = self.state();
                state.images = gallery
                    .images()
                    .map(|i| (i.hash.clone(), i.clone()))
                    .collect();
                state.thumbs = thumbs;
                state.gallery = Some(gallery);
            }
        }
        let mut state = self.state();
        let Some(gallery) = state.gallery.clone() else {
            return;
        };
        let cards = marked(&gallery, &state.marks);
        let shown = Gallery { cards, ..gallery };
        let mut frames = Vec::new();
        let order: Vec<String> = shown.cards.iter().map(|c| c.id.clone()).collect();
        for c in &shown.cards {
            let html = page::card(c, &shown);
            if state.rendered.get(&c.id) != Some(&html) {
                frames.push(frame("card", &json!({ "id": c.id, "html": html })));
                state.rendered.insert(c.id.clone(), html);
            }
        }
        let gone: Vec<String> = state
            .rendered
            .keys()
            .filter(|id| !order.contains(id))
            .cloned()
            .collect();
        for id in gone {
            state.rendered.remove(&id);
            frames.push(frame("remove", &json!({ "id": id })));
        }
        if order != state.order {
            frames.push(frame("order", &json!(order)));
            state.order = order;
        }
        let totals =
            page::totals(&shown, Some((state.session_spent, state.session_saved))).into_string();
        if totals != state.totals {
            frames.push(frame("totals", &json!({ "html": totals })));
            state.totals = totals;
        }
        if !frames.is_empty() {
            state.version += 1;
        }
        drop(state);
        for f in frames {
            // No page open is fine.
            let _ = self.events.send(f);
        }
    }

    fn collect(&self, failed: &HashMap<String, String>) -> Result<(Gallery, PathBuf)> {
        let quiet = Printer {
            quiet: true,
            ..Printer::new(true, 0)
        };
        let project = Project::load(self.dir.as_deref(), &quiet)?;
        let gallery = gallery::collect(&project, &self.selection, failed)?;
        Ok((gallery, thumbs_dir(&project.manifest.state_dir())))
    }

    /// The page as it stands now, and its version.
    async fn page(self: &Arc<Live>) -> (String, u64) {
        let ready = self.state().gallery.is_some();
        if !ready {
            self.state().collect = true;
            self.round().await;
        }
        let state = self.state();
        let Some(gallery) = state.gallery.clone() else {
            return (
                "<!doctype html><title>wanx gallery</title><p>The project does not load yet: see the watch's output.</p>".to_owned(),
                state.version,
            );
        };
        let shown = Gallery {
            cards: marked(&gallery, &state.marks),
            ..gallery
        };
        let html = page::page(&shown, true)
            .replacen(
                "<body data-live=\"true\"",
                &format!(
                    "<body data-live=\"true\" data-version=\"{}\"",
                    state.version
                ),
                1,
            )
            .replacen(
                &page::totals(&shown, None).into_string(),
                &state.totals,
                usize::from(!state.totals.is_empty()),
            );
        (html, state.version)
    }

    async fn respond(self: Arc<Live>, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        match path.as_str() {
            "/" | "/index.html" => {
                let (html, _) = self.page().await;
                reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    "no-store",
                    html.into(),
                )
            }
            "/events" => self.stream(&query),
            _ => {
                if let Some(name) = path.strip_prefix("/thumbs/") {
                    self.thumb(name).await
                } else if let Some(name) = path.strip_prefix("/images/") {
                    self.image(name).await
                } else {
                    not_found()
                }
            }
        }
    }

    /// `/events`: every card first when the page is older than the state, then each new event.
    fn stream(&self, query: &str) -> Reply {
        let page_version = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("v="))
            .and_then(|v| v.parse::<u64>().ok());
        let mut rx = self.events.subscribe();
        let mut first = vec![Arc::<str>::from("retry: 1000\n\n")];
        {
            let state = self.state();
            if page_version != Some(state.version) {
                for id in &state.order {
                    if let Some(html) = state.rendered.get(id) {
                        first.push(frame("card", &json!({ "id": id, "html": html })));
                    }
                }
                first.push(frame("order", &json!(state.order)));
            }
        }
        let (tx, body_rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            for f in first {
                if tx.send(Bytes::from(f.as_bytes().to_vec())).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    got = rx.recv() => match got {
                        Ok(f) => Bytes::from(f.as_bytes().to_vec()),
                        // Too far behind (the page reloads its cards on reconnect), or ending.
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
                };
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        let body = EventBody(body_rx).boxed_unsync();
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            "text/event-stream".parse().expect("a valid header"),
        );
        headers.insert(CACHE_CONTROL, "no-store".parse().expect("a valid header"));
        response
    }

    async fn thumb(&self, name: &str) -> Reply {
        let Some(hash) = name.strip_suffix(".jpg") else {
            return not_found();
        };
        let (image, cache) = {
            let state = self.state();
            (state.images.get(hash).cloned(), state.thumbs.clone())
        };
        let Some(image) = image else {
            return not_found();
        };
        let made =
            tokio::task::spawn_blocking(move || thumbnail(&cache, &image).and_then(std::fs::read))
                .await;
        match made {
            Ok(Ok(bytes)) => reply(StatusCode::OK, "image/jpeg", IMMUTABLE, bytes.into()),
            _ => not_found(),
        }
    }

    async fn image(&self, name: &str) -> Reply {
        let Some((hash, _)) = name.split_once('.') else {
            return not_found();
        };
        let Some(image) = self.state().images.get(hash).cloned() else {
            return not_found();
        };
        let kind = match image.ext {
            "jpg" => "image/jpeg",
            "webp" => "image/webp",
            _ => "image/png",
        };
        match tokio::fs::read(&image.source).await {
            Ok(bytes) => reply(StatusCode::OK, kind, IMMUTABLE, bytes.into()),
            Err(_) => not_found(),
        }
    }
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The gallery's cards with the watch's live statuses over the planned ones.
fn marked(gallery: &Gallery, marks: &HashMap<String, (&'static str, String)>) -> Vec<Card> {
    gallery
        .cards
        .iter()
        .map(|c| match marks.get(&c.id) {
            Some((status, reason)) => Card {
                status,
                reason: reason.clone(),
                ..c.clone()
            },
            None => c.clone(),
        })
        .collect()
}

/// One server-sent event.
fn frame(event: &str, data: &Value) -> Arc<str> {
    Arc::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn reply(status: StatusCode, kind: &str, cache: &str, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = kind.parse() {
        headers.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = cache.parse() {
        headers.insert(CACHE_CONTROL, v);
    }
    response
}

fn not_found() -> Reply {
    reply(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no-store",
        Bytes::from_static(b"not found\n"),
    )
}

/// A body that sends what the channel gives, until it closes.
struct EventBody(mpsc::Receiver<Bytes>);

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

async fn accept(listener: TcpListener, live: Arc<Live>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: wait for connections to close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |request| {
                let live = Arc::clone(&live);
                async move { Ok::<_, Infallible>(live.respond(request).await) }
            });
            // A page closing mid-exchange is its business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One round per wake-up; events during a round wake it again.
async fn refresher(live: Arc<Live>) {
    loop {
        live.refresh.notified().await;
        live.round().await;
    }
}

/// `--serve`'s address: `PORT` (on 127.0.0.1), `HOST` (a free port) or `HOST:PORT`.
pub fn parse_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok((Ipv4Addr::LOCALHOST, port).into());
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok((ip, 0).into());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let with_port = if text.contains(':') {
        text.to_owned()
    } else {
        format!("{text}:0")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{text}` is not an address to serve on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_addresses() {
        assert_eq!(parse_addr("8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse_addr("127.0.0.1"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0:9000"),
            Ok("0.0.0.0:9000".parse().unwrap())
        );
        assert_eq!(parse_addr("::1"), Ok("[::1]:0".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:7"), Ok("[::1]:7".parse().unwrap()));
        assert!(parse_addr("not an address").is_err());
    }
}
