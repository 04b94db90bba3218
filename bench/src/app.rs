//! The local app every data-plane path is measured against: a small, fast HTTP/1.1 server
//! on `127.0.0.1:0`. `GET /` answers 1 KiB; `GET /big` answers the configured download
//! size; `POST /echo` answers its body back. Keep-alive, TCP_NODELAY, one tokio task per connection on its own runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::procs::Result;

/// Size of the body of `GET /`.
pub const SMALL_BODY: usize = 1024;

/// A running app; stopped (its runtime shut down) when dropped.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl App {
    /// Starts the app with `big_bytes` for `GET /big`.
    pub fn start(big_bytes: usize) -> Result<App> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-app")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build the app's runtime: {e}"))?;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("app: cannot bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("app: local address: {e}"))?;
        let small = Arc::new(small_response());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: pause rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let small = Arc::clone(&small);
                tokio::spawn(async move {
                    let _ = serve(stream, &small, big_bytes).await;
                });
            }
        });
        Ok(App {
            addr,
            runtime: Some(runtime),
        })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn small_response() -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {SMALL_BODY}\r\n\r\n"
    )
    .into_bytes();
    response.extend(std::iter::repeat_n(b'x', SMALL_BODY));
    response
}

/// Answers the requests of one connection until it closes. An HTTP/1.0 request without
/// keep-alive gets its answer and the connection closes.
async fn serve(stream: TcpStream, small: &[u8], big_bytes: usize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_owned();
        if request_line.is_empty() {
            continue;
        }
        let mut keep_alive = request_line.ends_with("HTTP/1.1");
        let mut content_length = 0u64;
        let mut echoed_headers = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if header == "connection: close" {
                keep_alive = false;
            } else if header == "connection: keep-alive" {
                keep_alive = true;
            } else if let Some(length) = header.strip_prefix("content-length:") {
                content_length = length.trim().parse().unwrap_or(0);
            } else if header.starts_with("x-fill-") {
                echoed_headers.push_str(&header);
                echoed_headers.push_str("\r\n");
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        if path == "/echo" {
            let mut body = Vec::new();
            (&mut reader)
                .take(content_length)
                .read_to_end(&mut body)
                .await?;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{echoed_headers}\r\n",
                body.len()
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(&body).await?;
        } else if path == "/big" {
            write_big(&mut write, big_bytes).await?;
        } else {
            write.write_all(small).await?;
        }
        if !keep_alive {
            write.shutdown().await?;
            return Ok(());
        }
    }
}

async fn write_big(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    big_bytes: usize,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {big_bytes}\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await?;
    let chunk = vec![b'y'; 256 * 1024];
    let mut left = big_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        write.write_all(chunk.get(..n).unwrap_or(&chunk)).await?;
        left -= n;
    }
    Ok(())
}
