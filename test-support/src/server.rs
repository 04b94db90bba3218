//! A TCP server on loopback on a thread of its own: local apps behind tunnels, fake APIs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A server on `127.0.0.1:<port the kernel picks>` (or the address given to
/// [`LoopbackServer::start_on`]) whose accept loop runs on its own thread and hands each
/// connection to a handler. Dropping it stops the loop (the flag
/// handlers are given turns true, and a connection wakes the loop) and joins its thread;
/// handlers still running end on their own (they may watch the flag).
#[derive(Debug)]
pub struct LoopbackServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    /// Starts it; each connection is handled on a thread of its own, with the stop flag.
    pub fn start<F>(handle: F) -> std::io::Result<LoopbackServer>
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), handle)
    }

    /// Like [`LoopbackServer::start`], listening on `addr` (e.g. `[::1]:0` or
    /// `127.0.0.2:0`: an app that does not answer on `127.0.0.1`).
    pub fn start_on<F>(addr: SocketAddr, handle: F) -> std::io::Result<LoopbackServer>
    where
        F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    {
        let handle = Arc::new(handle);
        Self::accepting(addr, move |stream, stop| {
            let (handle, stop) = (Arc::clone(&handle), Arc::clone(stop));
            std::thread::spawn(move || handle(stream, &stop));
        })
    }

    /// Starts it; each connection is handled on the accept thread, one after another.
    pub fn start_serial<F>(mut handle: F) -> std::io::Result<LoopbackServer>
    where
        F: FnMut(TcpStream) + Send + 'static,
    {
        Self::accepting(SocketAddr::from(([127, 0, 0, 1], 0)), move |stream, _| {
            handle(stream)
        })
    }

    fn accepting<F>(addr: SocketAddr, mut accepted: F) -> std::io::Result<LoopbackServer>
    where
        F: FnMut(TcpStream, &Arc<AtomicBool>) + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        accepted(stream, &stop);
                    }
                }
            })
        };
        Ok(LoopbackServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on: `127.0.0.1:<port>` unless started on another.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    fn exchange(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"ping").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn handlers_answer_and_see_the_stop_flag_once_it_drops() {
        let (flags, seen) = mpsc::channel();
        let server = LoopbackServer::start(move |mut stream, stop| {
            let mut request = [0u8; 4];
            stream.read_exact(&mut request).unwrap();
            stream.write_all(b"pong").unwrap();
            drop(stream);
            // Running until the server is dropped: the flag turns.
            let stopped =
                crate::eventually(Duration::from_secs(10), || stop.load(Ordering::SeqCst));
            let _ = flags.send(stopped);
        })
        .unwrap();
        assert_eq!(exchange(server.addr()), "pong");
        let port = server.port();
        drop(server);
        assert_eq!(seen.recv_timeout(Duration::from_secs(20)), Ok(true));
        // The listener has gone with the accept loop.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn a_server_started_on_an_address_answers_there_only() {
        let server = LoopbackServer::start_on("[::1]:0".parse().unwrap(), |mut stream, _| {
            let mut request = [0u8; 4];
            stream.read_exact(&mut request).unwrap();
            let _ = stream.write_all(b"pong");
        })
        .unwrap();
        assert_eq!(server.addr().ip().to_string(), "::1");
        assert_eq!(exchange(server.addr()), "pong");
        assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
    }

    #[test]
    fn a_serial_server_takes_connections_in_turn() {
        let mut count = 0;
        let server = LoopbackServer::start_serial(move |mut stream| {
            let mut request = [0u8; 4];
            stream.read_exact(&mut request).unwrap();
            count += 1;
            let _ = stream.write_all(format!("{count}").as_bytes());
        })
        .unwrap();
        assert_eq!(exchange(server.addr()), "1");
        assert_eq!(exchange(server.addr()), "2");
    }
}
