//! An in-process [`Transport`]: the client SDK talks to a [`LeaseService`] directly, with
//! no sshd. For tests, examples and programs that embed an edge.
//!
//! Control requests run as a fixed [`Caller`]. Forwards either proxy for real
//! ([`ForwardMode::Proxy`]: listen on `127.0.0.1:<edge_bind_port>` and copy each
//! connection to `127.0.0.1:<local_port>`, as sshd's `-R` listener does) or are simulated
//! ([`ForwardMode::Simulated`]: no sockets; they end when [`InProcessTransport::kill_forwards`]
//! is called, as a killed `ssh` would).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mytunnel_core::policy::Caller;
use mytunnel_core::protocol::{CtlRequest, CtlResponse};
use mytunnel_core::transport::{Forward, ForwardEnd, ForwardSpec, Transport, TransportError};
use mytunnel_core::BindTarget;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;

use crate::service::LeaseService;

/// How forwards are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Real TCP: listen on the edge bind port, proxy to the local port.
    Proxy,
    /// No sockets: the forward only ends when killed.
    Simulated,
}

/// A transport that calls a lease service in the same process.
#[derive(Debug, Clone)]
pub struct InProcessTransport {
    service: LeaseService,
    caller: Caller,
    mode: ForwardMode,
    kill: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    forwards_opened: Arc<std::sync::atomic::AtomicU64>,
}

impl InProcessTransport {
    /// A transport acting as `caller` on `service`.
    pub fn new(service: LeaseService, caller: Caller, mode: ForwardMode) -> Self {
        InProcessTransport {
            service,
            caller,
            mode,
            kill: Arc::default(),
            forwards_opened: Arc::default(),
        }
    }

    /// The service behind it.
    pub fn service(&self) -> &LeaseService {
        &self.service
    }

    /// Ends every open forward, as `kill -9` of the data-plane ssh would.
    pub fn kill_forwards(&self) {
        let senders = std::mem::take(&mut *self.lock_kill());
        for sender in senders {
            let _ = sender.send(true);
        }
    }

    /// How many forwards have been opened so far.
    pub fn forwards_opened(&self) -> u64 {
        self.forwards_opened
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock_kill(&self) -> std::sync::MutexGuard<'_, Vec<watch::Sender<bool>>> {
        self.kill
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        self.service
            .handle(&self.caller, request.clone())
            .await
            .map_err(TransportError::Refused)
    }

    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        let (kill_tx, kill_rx) = watch::channel(false);
        let task = match self.mode {
            ForwardMode::Simulated => None,
            ForwardMode::Proxy => {
                let refused = |e: std::io::Error| {
                    TransportError::Unreachable(format!(
                        "remote port forwarding failed for listen {}: {e}",
                        spec.edge_bind
                    ))
                };
                let task = match &spec.edge_bind {
                    BindTarget::LoopbackPort(port) => {
                        let listener = TcpListener::bind(("127.0.0.1", *port))
                            .await
                            .map_err(refused)?;
                        tokio::spawn(proxy(Listener::Tcp(listener), spec.local_port))
                    }
                    BindTarget::UnixSocket(path) => {
                        let listener = UnixListener::bind(path.as_str()).map_err(refused)?;
                        tokio::spawn(proxy(Listener::Unix(listener), spec.local_port))
                    }
                };
                Some(task)
            }
        };
        self.lock_kill().push(kill_tx);
        self.forwards_opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(InProcessForward {
            kill: kill_rx,
            task,
        }))
    }
}

/// The edge side of an in-process forward, like sshd's listener for `ssh -R`.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn proxy(listener: Listener, local_port: u16) {
    loop {
        match &listener {
            Listener::Tcp(l) => match l.accept().await {
                Ok((inbound, _)) => {
                    tokio::spawn(pipe(inbound, local_port));
                }
                Err(_) => return,
            },
            Listener::Unix(l) => match l.accept().await {
                Ok((inbound, _)) => {
                    tokio::spawn(pipe(inbound, local_port));
                }
                Err(_) => return,
            },
        }
    }
}

async fn pipe<S>(mut inbound: S, local_port: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", local_port)).await {
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    }
}

/// A forward of the in-process transport.
#[derive(Debug)]
pub struct InProcessForward {
    kill: watch::Receiver<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl Forward for InProcessForward {
    async fn ended(&mut self) -> ForwardEnd {
        let reason = match self.kill.wait_for(|killed| *killed).await {
            Ok(_) => "killed",
            Err(_) => "transport dropped",
        };
        if let Some(task) = self.task.take() {
            task.abort();
        }
        ForwardEnd {
            reason: reason.to_owned(),
        }
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for InProcessForward {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
