//! `--probe URL`: a minimal HTTP/1.1 client over a tokio `TcpStream`, for smoke tests inside
//! containers that have no curl. Plain `http://` only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("unsupported URL {url:?}: only http://HOST[:PORT][/PATH] is supported")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        // [::1]:8080
        let end = v6
            .find(']')
            .ok_or_else(|| format!("URL {url:?}: unterminated IPv6 address"))?;
        let host = &v6[..end];
        let port = match v6[end + 1..].strip_prefix(':') {
            Some(p) => parse_port(p, url)?,
            None if v6[end + 1..].is_empty() => 80,
            None => return Err(format!("URL {url:?}: bad authority")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), parse_port(port, url)?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    Ok(Url {
        host,
        port,
        path: path.to_string(),
    })
}

fn parse_port(port: &str, url: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("URL {url:?}: invalid port {port:?}"))
}

/// The request bytes: GET, or POST with a JSON body.
pub fn build_request(url: &Url, body: Option<&str>) -> Vec<u8> {
    let host_header = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let method = if body.is_some() { "POST" } else { "GET" };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: attune-api-probe/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        url.path,
        attune_common::VERSION
    );
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    req.into_bytes()
}

/// Parses a full HTTP/1.x response (read until the server closed the connection):
/// the status code and the body (de-chunked if needed).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("truncated response: no end of headers")?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| "response headers are not UTF-8")?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut content_length: Option<usize> = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = content_length {
        if body.len() < len {
            return Err(format!("truncated body: {} of {len} bytes", body.len()));
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".to_string());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Sends the request and returns `(status, body)`.
pub async fn fetch(
    url: &Url,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let work = async {
        let addr = format!("{}:{}", url.host, url.port);
        let mut stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .write_all(&build_request(url, body))
            .await
            .map_err(|e| format!("cannot send request to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("cannot read response from {addr}: {e}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no complete response within {} ms", timeout.as_millis()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/health").unwrap(),
            Url {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            }
        );
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            Url {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(parse_url("http://[::1]:9/x?y=1").unwrap().host, "::1");
        assert!(parse_url("https://example.invalid/").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
    }

    #[test]
    fn builds_requests() {
        let url = parse_url("http://127.0.0.1:8080/executions").unwrap();
        let get = String::from_utf8(build_request(&url, None)).unwrap();
        assert!(get.starts_with("GET /executions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(get.ends_with("\r\n\r\n"));
        let post = String::from_utf8(build_request(&url, Some("{}"))).unwrap();
        assert!(post.starts_with("POST /executions HTTP/1.1\r\n"));
        assert!(post.contains("Content-Length: 2\r\n"));
        assert!(post.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn parses_responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
        let (status, body) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((status, body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nok").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
