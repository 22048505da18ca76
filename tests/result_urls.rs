//! A result URL wanx cannot or should not fetch, and a result that is not an image, are reported
//! as what they are (issue 12, point 8), against a tiny DashScope stand-in on loopback that answers
//! every task query with the URL under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use crate::util::Project;

const PLAN: &str =
    "[[task]]\nid = \"a\"\nmodel = \"wan2.2-t2i-flash\"\nsize = \"512*512\"\nprompt = \"x\"\n";

/// Serves submissions, task queries answering with `result_url` (`{base}` is replaced by the
/// server's address), and `GET /html` with an HTML page. Returns the base URL.
fn fake_dashscope(result_url: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let base = addr.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (kind, reply) = if path == "/html" {
                (
                    "text/html",
                    "<!DOCTYPE html><html><body>Access denied</body></html>".to_owned(),
                )
            } else if path.contains("/tasks/") {
                let url = result_url.replace("{base}", &base);
                (
                    "application/json",
                    format!(
                        r#"{{"request_id":"r2","output":{{"task_id":"t-1","task_status":"SUCCEEDED","results":[{{"url":"{url}"}}],"task_metrics":{{"TOTAL":1,"SUCCEEDED":1,"FAILED":0}}}},"usage":{{"image_count":1}}}}"#
                    ),
                )
            } else {
                (
                    "application/json",
                    r#"{"request_id":"r1","output":{"task_id":"t-1","task_status":"PENDING"}}"#
                        .to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    format!("{addr}/api/v1")
}

fn build_against(result_url: &'static str) -> crate::util::Run {
    let p = Project::new();
    p.file("plans/a.toml", PLAN);
    let base = fake_dashscope(result_url);
    let run: crate::util::Run = p
        .command(&["build"])
        .env("DASHSCOPE_HTTP_BASE_URL", base)
        .output()
        .unwrap()
        .into();
    run.status(1);
    assert!(!p.exists("generated/a.png"));
    run
}

#[test]
fn a_file_or_ftp_result_url_is_named_not_a_transport_error() {
    for url in ["file:///etc/passwd", "ftp://example.invalid/a.png"] {
        let run = build_against(url);
        assert!(
            run.stderr.contains(url) && run.stderr.contains("http"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("builder error"), "{}", run.stderr);
    }
}

#[test]
fn an_html_page_served_as_a_result_is_not_called_truncated() {
    let run = build_against("{base}/html");
    assert!(run.stderr.contains("not an image"), "{}", run.stderr);
    assert!(run.stderr.contains("HTML"), "{}", run.stderr);
    assert!(!run.stderr.contains("truncated"), "{}", run.stderr);
}
