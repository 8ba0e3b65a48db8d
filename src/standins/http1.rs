//! The smallest HTTP/1.1 server side the test fakes need: read one request (headers, then a
//! `Content-Length` body — what reqwest sends) from a socket, and write a JSON answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request.
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path with query string.
    pub path: String,
    /// Headers, as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Reads the next request from `sock` (`buf` keeps bytes of a following pipelined request);
/// `None` when the client closed the connection.
pub async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut h);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let len = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= n + len {
                let headers = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let out = Request {
                    method: req.method.unwrap().to_string(),
                    path: req.path.unwrap().to_string(),
                    headers,
                    body: buf[n..n + len].to_vec(),
                };
                buf.drain(..n + len);
                return Some(out);
            }
        }
        let mut chunk = [0u8; 8192];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// Writes a JSON answer; false when the client is gone.
pub async fn write_json(sock: &mut TcpStream, status: u16, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // One write: a head and a body written apiece meet Nagle's algorithm and the client's
    // delayed ACK, a 40 ms stall per answer.
    let mut answer = head.into_bytes();
    answer.extend_from_slice(body);
    sock.write_all(&answer).await.is_ok()
}

/// Serves `handle(method, path, JSON body) -> (status, JSON answer)` on a free loopback port, one
/// task per connection; returns `http://127.0.0.1:PORT`.
pub async fn serve_json<F>(handle: F) -> String
where
    F: Fn(&str, &str, serde_json::Value) -> (u16, serde_json::Value) + Send + Sync + 'static,
{
    serve_json_on(0, handle).await.expect("a free loopback port")
}

/// [`serve_json`] on loopback port `port` (0: any free one).
pub async fn serve_json_on<F>(port: u16, handle: F) -> std::io::Result<String>
where
    F: Fn(&str, &str, serde_json::Value) -> (u16, serde_json::Value) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::sync::Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut sock, &mut buf).await {
                    let body = serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
                    let (status, answer) = handle(&req.method, &req.path, body);
                    if !write_json(&mut sock, status, answer.to_string().as_bytes()).await {
                        return;
                    }
                }
            });
        }
    });
    Ok(url)
}

/// A Google API error answer: `{"error": {"code", "message", "status"}}`.
pub fn google_error(code: u16, status: &str, message: &str) -> (u16, serde_json::Value) {
    (
        code,
        serde_json::json!({"error": {"code": code, "message": message, "status": status}}),
    )
}
