//! How the emulator answers: a JSON body, an OSS-style XML error, or (an injected `reset`) no
//! answer at all. A leaf: every route and the request checks build their answers from here.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// The injected `reset` fault: the connection closes without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by an injected fault")]
pub(crate) struct ConnectionReset;

pub(crate) type Answer = Result<Response<Full<Bytes>>, ConnectionReset>;

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    // Serializing a `Value` or the ledger (string keys only) cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An OSS-style error: `application/xml`, `<Error><Code>…`.
pub(crate) fn oss_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  \
         <RequestId>{request_id}</RequestId>\n  <HostId>wanx-emulator</HostId>\n</Error>\n",
        escape(code),
        escape(message)
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-oss-request-id", header_value(request_id));
    response
}

/// A header value from text the emulator made (ids are hex and dashes).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// An injected status, or 500 for one `http::StatusCode` rejects (config checks keep 400–599).
pub(crate) fn fault_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
