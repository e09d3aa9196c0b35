//! A loopback proxy that refuses WebSocket upgrades and passes everything else through byte
//! for byte: what a client behind a corporate proxy that breaks WebSockets sees. For the HTTP
//! transport's end-to-end tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The refusal a blocked upgrade gets.
const REFUSAL: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A running proxy; stops when dropped.
pub struct NoUpgradeProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
    refused: Arc<AtomicUsize>,
}

impl NoUpgradeProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`). Runs on the
    /// current tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let upstream = upstream.to_owned();
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), count.clone()));
            }
        });
        Self {
            addr,
            task,
            refused,
        }
    }

    /// How many upgrades it refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for NoUpgradeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `head` (what the client sent so far) asks for a WebSocket upgrade.
fn asks_upgrade(head: &[u8]) -> bool {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("upgrade: websocket")
}

/// One client connection. Browsers open a connection of its own for each WebSocket, so looking
/// at what the client sends is enough: a request asking for an upgrade ends the connection
/// (with a 502 when nothing was passed on yet).
async fn relay(mut client: TcpStream, upstream: String, refused: Arc<AtomicUsize>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        let _ = client.write_all(REFUSAL).await;
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        // The tail of the previous read: a header split across two reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        let mut forwarded = false;
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return forwarded,
                Ok(n) => n,
            };
            let mut seen = std::mem::take(&mut tail);
            seen.extend_from_slice(&buf[..n]);
            if asks_upgrade(&seen) {
                refused.fetch_add(1, Ordering::Relaxed);
                return forwarded;
            }
            tail = seen[seen.len().saturating_sub(32)..].to_vec();
            if server_write.write_all(&buf[..n]).await.is_err() {
                return forwarded;
            }
            forwarded = true;
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        forwarded = up => {
            if !forwarded {
                let _ = client_write.write_all(REFUSAL).await;
            }
        }
        _ = down => {}
    }
}
