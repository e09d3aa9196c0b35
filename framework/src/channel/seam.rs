//! The transport seam: a connection's inbound source and outbound writer, over a WebSocket
//! (`transport`) or over HTTP (`http_link`). Enums, not trait objects: the WebSocket path pays
//! one `match` per poll, no allocation or dynamic call per frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::http_link::{HttpSource, HttpWriter};
use super::transport::{Ended, Incoming, IncomingStream};

/// Where a connection's inbound frames come from.
pub(crate) enum Source {
    WebSocket(IncomingStream),
    Http(HttpSource),
}

impl Stream for Source {
    type Item = Incoming;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        match self.get_mut() {
            Source::WebSocket(s) => Pin::new(s).poll_next(cx),
            Source::Http(s) => Pin::new(s).poll_next(cx),
        }
    }
}

/// What drains a connection's outbound queue to its client. Resolves once the close frame is
/// handed over, or the client is gone. Over a WebSocket the queue is drained by the upgrade
/// response's body itself (`transport::OutboundBody`): the connection only waits for its end.
pub(crate) enum Sink {
    WebSocket(Ended),
    /// Boxed: the enum is as large as its largest variant, and the WebSocket's is a pointer.
    Http(Box<HttpWriter>),
}

impl Future for Sink {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sink::WebSocket(w) => Pin::new(w).poll(cx),
            Sink::Http(w) => Pin::new(w).poll(cx),
        }
    }
}
