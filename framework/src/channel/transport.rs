//! The glue to `actix-ws`: the only module that knows its types.
//!
//! `actix-ws` gives an upgrade response, a `Session` (a bounded channel into the response body,
//! which encodes every message it finds queued into one buffer, hence one write) and a
//! `MessageStream`. This module turns those into the framework's own [`Incoming`] items and a
//! [`Writer`] future that drains a connection's [`Outbound`] queue into the session.

use std::collections::VecDeque;
use std::fmt;
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
use crate::protocol::close_code;

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
    /// Anything else the codec refused: the connection closes as [`Broken`] says.
    Broken(Broken),
}

/// A message the codec refused: the close code and reason to answer it with, and what was
/// wrong (its `Display`, for the log).
#[derive(Debug)]
pub(crate) struct Broken {
    /// 1007 ([`close_code::INVALID_PAYLOAD`]) for a text message that is not UTF-8, 1002
    /// ([`close_code::PROTOCOL_ERROR`]) for the rest.
    pub code: u16,
    pub reason: &'static str,
    detail: String,
}

impl Broken {
    fn of(e: ProtocolError) -> Broken {
        let (code, reason) = if is_invalid_utf8(&e) {
            (close_code::INVALID_PAYLOAD, "text message is not UTF-8")
        } else {
            (close_code::PROTOCOL_ERROR, "protocol error")
        };
        Broken {
            code,
            reason,
            detail: e.to_string(),
        }
    }
}

/// Whether actix-ws refused a text message for not being UTF-8 (RFC 6455 §8.1: close with
/// 1007). It reports that as an I/O error of kind `InvalidData` holding the `Utf8Error`, for a
/// single frame, or that error's text (`invalid utf-8 sequence ...`, `incomplete utf-8 byte
/// sequence ...`), for a message assembled from continuation frames.
fn is_invalid_utf8(e: &ProtocolError) -> bool {
    let ProtocolError::Io(io) = e else {
        return false;
    };
    io.kind() == std::io::ErrorKind::InvalidData
        && io.get_ref().is_some_and(|inner| {
            inner.is::<std::str::Utf8Error>() || inner.to_string().contains("utf-8")
        })
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
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
                    // A text message that is not UTF-8 (1007), or anything else (1002).
                    e => Incoming::Broken(Broken::of(e)),
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
