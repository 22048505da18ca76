//! A minimal `multipart/form-data` parser (RFC 7578) for the emulator's OSS-style upload form, small
//! and hand-written so the emulator adds no dependency. Image formats and data URIs are in `media`.

use hyper::body::Bytes;

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Bytes,
}

/// The boundary of a `multipart/form-data; boundary=…` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// Splits a body into its parts; `Err` names what is malformed. Part data is shared, not copied.
pub(crate) fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or("no opening boundary")? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        at += line_end(&body[at..]).ok_or("a boundary line does not end")?;
        let head_end =
            find(body, b"\r\n\r\n", at).ok_or("a part has no blank line after its headers")?;
        let head =
            std::str::from_utf8(&body[at..head_end]).map_err(|_| "part headers are not UTF-8")?;
        let data_start = head_end + 4;
        let next = find(body, &[b"\r\n", delimiter].concat(), data_start)
            .ok_or("a part does not end with a boundary")?;
        parts.push(part(head, body.slice(data_start..next))?);
        at = next + 2 + delimiter.len();
    }
}

fn part(head: &str, data: Bytes) -> Result<Part, String> {
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad part header `{line}`"))?;
        let value = value.trim();
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            for param in value.split(';').skip(1) {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim() {
                    "name" => name = Some(v),
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        } else if key.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let name = name.ok_or("a part has no `name` in its content-disposition")?;
    Ok(Part {
        name,
        filename,
        content_type,
        data,
    })
}

/// The length of the rest of the line including its CRLF.
fn line_end(bytes: &[u8]) -> Option<usize> {
    find(bytes, b"\r\n", 0).map(|i| i + 2)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_form_like_the_sdk_sends() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\ndir/a.png\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
              Content-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n--XyZ--\r\n",
        );
        let delimiter = boundary("multipart/form-data; boundary=\"XyZ\"").unwrap();
        let parts = parse_multipart(&body, &delimiter).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), &parts[0].data[..]),
            ("key", &b"dir/a.png"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        assert_eq!(
            &parts[1].data[..],
            b"\x89PNG\r\n--X",
            "a near-boundary inside data is data"
        );
        assert!(boundary("application/json").is_none());
        assert!(parse_multipart(&Bytes::from_static(b"--XyZ\r\nno headers"), "XyZ").is_err());
    }
}
