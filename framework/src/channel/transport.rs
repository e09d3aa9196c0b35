//! The glue to `actix-ws`: the only module that knows its types.
//!
//! `actix-ws` gives an upgrade response, a `Session` (a bounded channel into the response body,
//! which encodes every message it finds queued into one buffer, hence one write) and a
//! `MessageStream`. This module turns those into the framework's own [`Incoming`] items and a
//! [`Writer`] future that drains a connection's [`Outbound`] queue into the session.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Message, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{Sink, Stream};

use crate::channel::outbound::{Frame, Outbound};

/// One inbound event from the socket.
#[derive(Debug)]
pub(crate) enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<(u16, String)>),
    /// A frame (or a message assembled from continuations) over the size limit.
    TooBig,
    /// The socket failed under the codec (reset, closed mid-frame): there is nobody left to
    /// send a close frame to.
    Gone(String),
    /// Anything else the codec refused.
    Broken(String),
}

/// The socket's inbound side as [`Incoming`] items. The first error ends it: after a decode
/// error actix-ws keeps the offending bytes and would yield the same error on every poll.
pub(crate) struct IncomingStream {
    inner: actix_ws::AggregatedMessageStream,
    failed: bool,
}

impl Stream for IncomingStream {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(item)) => item,
        };
        Poll::Ready(Some(match item {
            Ok(AggregatedMessage::Text(t)) => Incoming::Text(t),
            Ok(AggregatedMessage::Binary(b)) => Incoming::Binary(b),
            Ok(AggregatedMessage::Ping(b)) => Incoming::Ping(b),
            Ok(AggregatedMessage::Pong(_)) => Incoming::Pong,
            Ok(AggregatedMessage::Close(reason)) => Incoming::Close(
                reason.map(|r| (u16::from(r.code), r.description.unwrap_or_default())),
            ),
            Err(e) => {
                self.failed = true;
                match e {
                    ProtocolError::Overflow => Incoming::TooBig,
                    // actix-ws reports a message assembled from continuations over the limit
                    // as an I/O error with this text.
                    ProtocolError::Io(e) if e.to_string().contains("maximum continuation size") => {
                        Incoming::TooBig
                    }
                    // actix-ws wraps the request payload's errors (the TCP stream failing)
                    // this way; anything else is the peer breaking the protocol.
                    ProtocolError::Io(e)
                        if e.get_ref().is_some_and(|inner| inner.is::<PayloadError>()) =>
                    {
                        Incoming::Gone(e.to_string())
                    }
                    e => Incoming::Broken(e.to_string()),
                }
            }
        }))
    }
}

/// Performs the WebSocket handshake. `Err` is the HTTP error for a request that is not a valid
/// upgrade.
pub(crate) fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    max_frame_size: usize,
) -> Result<(HttpResponse, actix_ws::Session, IncomingStream), actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(req, payload)?;
    let inner = stream
        .max_frame_size(max_frame_size)
        .aggregate_continuations()
        .max_continuation_size(max_frame_size);
    Ok((
        response,
        session,
        IncomingStream {
            inner,
            failed: false,
        },
    ))
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(code, reason) => Message::Close(Some(CloseReason {
            code: CloseCode::from(code),
            description: (!reason.is_empty()).then_some(reason),
        })),
    }
}

/// Drains a connection's outbound queue into the socket. Resolves once the close frame has been
/// handed to the socket, or the socket is gone.
pub(crate) struct Writer {
    out: Arc<Outbound>,
    session: actix_ws::Session,
    batch: VecDeque<Frame>,
}

impl Writer {
    pub(crate) fn new(out: Arc<Outbound>, session: actix_ws::Session) -> Self {
        Writer {
            out,
            session,
            batch: VecDeque::new(),
        }
    }
}

impl Future for Writer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.batch.is_empty() {
                this.out.drain_into(&mut this.batch, cx.waker());
                if this.batch.is_empty() {
                    return Poll::Pending;
                }
            }
            while let Some(frame) = this.batch.front() {
                let is_close = matches!(frame, Frame::Close(..));
                match Pin::new(&mut this.session).poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => {
                        this.out.shut();
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(())) => {}
                }
                let Some(frame) = this.batch.pop_front() else {
                    break;
                };
                if Pin::new(&mut this.session)
                    .start_send(to_message(frame))
                    .is_err()
                {
                    this.out.shut();
                    return Poll::Ready(());
                }
                if is_close {
                    this.out.mark_close_sent();
                    this.batch.clear();
                    return Poll::Ready(());
                }
            }
        }
    }
}
