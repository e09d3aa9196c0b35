//! Raw HTTP/1.1 requests (`Connection: close`, read to the end) for what a client library would
//! hide or normalise: exact statuses, headers and bodies of the servers and programs under test.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a request may take before it fails.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A response as it came over the wire.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// What follows the head, as sent.
    pub body: Vec<u8>,
    /// The whole response, head and body, as text (lossy UTF-8).
    pub text: String,
}

impl Response {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Sends `method path` to `host` (`IP:PORT`, also the `Host` header) with `headers` and
/// `body` (always with its `Content-Length`), and reads the whole response. Fails when nothing
/// listens, when no full response comes within [`ANSWER_WITHIN`], or when it is not HTTP.
pub async fn try_request(
    host: impl Display,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let host = host.to_string();
    let exchange = async {
        let mut stream = TcpStream::connect(host.as_str()).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{method} {path}: no answer from {host} within {ANSWER_WITHIN:?}"),
            )
        })??;
    parse(response)
}

fn parse(response: Vec<u8>) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(&response).into_owned();
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    };
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: response[split + 4..].to_vec(),
        text,
    })
}

/// [`try_request`], panicking on failure; the status, the headers and the body.
pub async fn request(
    host: impl Display,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let r = try_request(host, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.headers, r.body)
}

/// A request without headers or body; the status and the whole response text.
pub async fn raw_http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    raw_http_with(addr, method, path, &[], "").await
}

/// [`raw_http`] with header fields and a body.
pub async fn raw_http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let r = try_request(addr, method, path, headers, body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.text)
}

/// A request to a URL (`http://IP:PORT/path?query`) with a `text/plain` body, as the tests
/// call the HTTP routes of the programs they start; the status and the body.
pub async fn http(method: &str, url: &str, body: &str) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let headers = [("Content-Type", "text/plain")];
    let r = try_request(host, method, path, &headers, body.as_bytes()).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// The first of `headers` named `name` (lower case).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `s` percent-encoded for a path segment or query value: all but unreserved characters.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
