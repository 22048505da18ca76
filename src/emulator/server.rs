//! The emulator's HTTP server: accepts connections, routes each request by method and path, and
//! hands it to the task routes ([`crate::emulator::tasks`]), the upload routes
//! ([`crate::emulator::uploads`]) or the emulator's own (`/emulator/ledger`, `reset`, `health`).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::emulator::request::ApiError;
use crate::emulator::response::{Answer, json_response};
use crate::emulator::shared::Shared;
use crate::emulator::tasks::{cancel, download, list, query, submit};
use crate::emulator::uploads::{get_policy, upload};
use crate::registry::{IMAGE2IMAGE, TEXT2IMAGE};

/// The path prefix of the API, as in `https://dashscope.aliyuncs.com/api/v1`.
pub(crate) const API_PREFIX: &str = "/api/v1";

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: wait for connections to close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Small JSON answers: don't let Nagle delay them.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { respond(&shared, request).await }
    });
    // A client hanging up mid-exchange is its business, and a service error is an injected reset:
    // hyper then closes the connection without writing an answer.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    /// A task submission to one of the registry's endpoint paths.
    Submit(&'static str),
    Task(&'a str),
    /// `GET /tasks?…`: the recent tasks.
    List,
    Cancel(&'a str),
    Policy,
    OssUpload,
    File {
        task_id: &'a str,
        index: u32,
    },
    Ledger,
    Reset,
    Health,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let path = path.trim_end_matches('/');
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    if let Some(api) = path.strip_prefix(API_PREFIX) {
        if let Some(task) = api.strip_prefix("/tasks/") {
            return match task.split_once('/') {
                None if get && !task.is_empty() => Route::Task(task),
                Some((id, "cancel")) if post && !id.is_empty() => Route::Cancel(id),
                _ => Route::NotFound,
            };
        }
        return match api {
            TEXT2IMAGE if post => Route::Submit(TEXT2IMAGE),
            IMAGE2IMAGE if post => Route::Submit(IMAGE2IMAGE),
            "/uploads" if get => Route::Policy,
            "/tasks" if get => Route::List,
            _ => Route::NotFound,
        };
    }
    match path {
        "/oss" if post => return Route::OssUpload,
        "/emulator/ledger" if get => return Route::Ledger,
        "/emulator/reset" if post => return Route::Reset,
        "/emulator/health" if get => return Route::Health,
        _ => {}
    }
    let file = path
        .strip_prefix("/files/")
        .filter(|_| get)
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(task_id, name)| {
            let index = name.strip_suffix(".png")?.parse().ok()?;
            Some(Route::File { task_id, index })
        });
    file.unwrap_or(Route::NotFound)
}

/// Answers one request. Every route passes through here.
async fn respond(shared: &Shared, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    match route(request.method(), &path) {
        Route::Submit(endpoint) => submit(shared, endpoint, request).await,
        Route::Task(task_id) => query(shared, request.headers(), task_id).await,
        Route::List => Ok(list(shared, &request)),
        Route::Cancel(task_id) => Ok(cancel(shared, request.headers(), task_id)),
        Route::Policy => Ok(get_policy(shared, &request)),
        Route::OssUpload => upload(shared, request).await,
        Route::File { task_id, index } => download(shared, task_id, index).await,
        Route::Ledger => Ok(json_response(StatusCode::OK, &shared.ledger())),
        Route::Reset => {
            shared.state().reset(Instant::now());
            Ok(json_response(StatusCode::OK, &json!({"status": "reset"})))
        }
        Route::Health => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::NotFound => Ok(ApiError::not_found(format!("no such endpoint: `{path}`"))
            .response(&shared.ids.next("request"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t2i = format!("{API_PREFIX}{TEXT2IMAGE}");
        assert_eq!(route(&Method::POST, &t2i), Route::Submit(TEXT2IMAGE));
        assert_eq!(
            route(&Method::POST, &format!("{t2i}/")),
            Route::Submit(TEXT2IMAGE)
        );
        assert_eq!(route(&Method::GET, &t2i), Route::NotFound);
        assert_eq!(route(&Method::GET, "/api/v1/tasks/abc"), Route::Task("abc"));
        assert_eq!(route(&Method::GET, "/api/v1/tasks/"), Route::List);
        assert_eq!(route(&Method::GET, "/api/v1/tasks"), Route::List);
        assert_eq!(route(&Method::POST, "/api/v1/tasks"), Route::NotFound);
        assert_eq!(
            route(&Method::POST, "/api/v1/tasks/abc/cancel"),
            Route::Cancel("abc")
        );
        assert_eq!(
            route(&Method::GET, "/api/v1/tasks/abc/cancel"),
            Route::NotFound
        );
        assert_eq!(route(&Method::GET, "/api/v1/uploads"), Route::Policy);
        assert_eq!(route(&Method::POST, "/oss"), Route::OssUpload);
        assert_eq!(route(&Method::POST, "/emulator/reset"), Route::Reset);
        assert_eq!(route(&Method::GET, "/emulator/health"), Route::Health);
        assert_eq!(route(&Method::POST, "/files/abc/3.png"), Route::NotFound);
        assert_eq!(
            route(&Method::GET, "/files/abc/3.png"),
            Route::File {
                task_id: "abc",
                index: 3
            }
        );
        assert_eq!(route(&Method::GET, "/files/abc/x.png"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/emulator/ledger"), Route::Ledger);
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
    }
}
