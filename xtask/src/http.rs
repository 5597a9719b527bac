//! HTTP GET and HEAD on loopback, through `ureq` (plain HTTP, no TLS): the api's `/health`
//! (smoke) and the registry API (the local registry, cache locations, publish). Only loopback
//! servers of this machine are asked.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;

/// One agent: 2 s to connect, 10 s in all; a 4xx or 5xx is an answer, not an error.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        // loopback only: no proxy from the environment, no redirect elsewhere
        .proxy(None)
        .max_redirects(0)
        .build()
        .into()
}

/// `HEAD path` on `addr`, with an `Accept` header when given: the status code and the headers
/// (names lowercased).
pub fn head(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let mut request = agent().head(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request
        .call()
        .with_context(|| format!("HEAD {path} on {addr}"))?;
    let headers = (response.headers().iter())
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_ascii_lowercase(), value)
        })
        .collect();
    Ok((response.status().as_u16(), headers))
}

/// `GET path` on `addr`, with an `Accept` header when given: the status code and the body.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut request = agent().get(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request
        .call()
        .with_context(|| format!("GET {path} on {addr}"))?;
    let status = response.status().as_u16();
    let body = (response.body_mut().read_to_string())
        .with_context(|| format!("GET {path} on {addr}: the body"))?;
    Ok((status, body))
}
