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
    sock.write_all(head.as_bytes()).await.is_ok() && sock.write_all(body).await.is_ok()
}
