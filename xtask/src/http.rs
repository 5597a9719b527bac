//! A minimal HTTP/1.0 GET over loopback: the api's `/health` (smoke) and the registry API (the
//! local registry, cache locations, publish). Only loopback servers of this machine are asked.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Context;

/// One HTTP/1.0 request: the whole response and its status code.
fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer from {addr}"))?;
    Ok((status, response))
}

/// `HEAD path` on `addr`, with an `Accept` header when given: the status code and the headers
/// (names lowercased).
pub fn head(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let (status, response) = request("HEAD", addr, path, accept)?;
    let headers = (response.lines().skip(1))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// `GET path` on `addr`, with an `Accept` header when given: the status code and the body.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> anyhow::Result<(u16, String)> {
    let (status, response) = request("GET", addr, path, accept)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
