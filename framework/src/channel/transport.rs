//! The glue to actix's HTTP server: the WebSocket upgrade, the socket's frames in, the
//! outbound queue out. The only module that knows the wire codec's types.
//!
//! It speaks WebSocket on actix-http's own frame codec (`actix_http::ws::Parser`), without
//! `actix-ws` in between, so that a connection holds no more than it needs and a frame takes
//! the shortest way:
//! - out: the upgrade response's body is the connection's [`Outbound`] queue itself
//!   ([`OutboundBody`]): a push wakes the HTTP dispatcher's task directly, which encodes every
//!   frame queued at that moment into one buffer, hence one write. (`actix-ws` puts a bounded
//!   channel of 32 messages and a sender task in between: one more hop and wake-up per batch,
//!   and about 1.5 KB per connection for the channel.)
//! - in: [`IncomingStream`] decodes the request payload's bytes frame by frame, joins
//!   continuation frames, and keeps no buffer once its bytes are used.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser, ProtocolError};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

use crate::channel::outbound::{Frame, Outbound, MAX_KEPT};
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
    /// The peer broke the protocol: 1002.
    fn protocol(detail: String) -> Broken {
        Broken {
            code: close_code::PROTOCOL_ERROR,
            reason: "protocol error",
            detail,
        }
    }

    /// A text message that is not UTF-8: 1007.
    fn not_utf8(detail: String) -> Broken {
        Broken {
            code: close_code::INVALID_PAYLOAD,
            reason: "text message is not UTF-8",
            detail,
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A message being assembled from continuation frames: text or binary, and its bytes so far.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// The socket's inbound side as [`Incoming`] items, decoded from the request payload's bytes.
/// The first error ends it: what follows a broken frame cannot be trusted.
pub(crate) struct IncomingStream {
    payload: web::Payload,
    /// Bytes read and not yet decoded; released when empty.
    buf: BytesMut,
    /// Largest frame, and largest message assembled from continuations.
    max_size: usize,
    partial: Option<Partial>,
    /// The connection's queue, to see the response body end (then nothing more is read).
    out: Arc<Outbound>,
    done: bool,
}

/// The payload length a frame's header announces, once its header is in `buf`.
fn announced_len(buf: &[u8]) -> Option<u64> {
    let len = *buf.get(1)? & 0x7f;
    match len {
        126 => Some(u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]))),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }
        n => Some(u64::from(n)),
    }
}

/// A protocol error as the item that ends the stream.
fn refused(e: ProtocolError) -> Incoming {
    match e {
        ProtocolError::Overflow => Incoming::TooBig,
        e => Incoming::Broken(Broken::protocol(e.to_string())),
    }
}

impl IncomingStream {
    /// The next complete message in `buf`, if any; `Err` ends the stream with that item.
    fn decode(&mut self) -> Result<Option<Incoming>, Incoming> {
        loop {
            // A frame over the limit is refused from its header, before its bytes arrive.
            if announced_len(&self.buf).is_some_and(|n| n > self.max_size as u64) {
                return Err(Incoming::TooBig);
            }
            let Some((fin, op, data)) =
                Parser::parse(&mut self.buf, true, self.max_size).map_err(refused)?
            else {
                return Ok(None);
            };
            let data = data.unwrap_or_default();
            match op {
                OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                    return Err(refused(ProtocolError::ContinuationStarted));
                }
                OpCode::Text | OpCode::Binary if !fin => {
                    self.partial = Some(Partial {
                        text: op == OpCode::Text,
                        data,
                    });
                }
                OpCode::Text => return text(data.freeze()).map(Some),
                OpCode::Binary => return Ok(Some(Incoming::Binary(data.freeze()))),
                OpCode::Continue => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(refused(ProtocolError::ContinuationNotStarted));
                    };
                    if partial.data.len() + data.len() > self.max_size {
                        return Err(Incoming::TooBig);
                    }
                    partial.data.extend_from_slice(&data);
                    if fin {
                        if let Some(Partial {
                            text: is_text,
                            data,
                        }) = self.partial.take()
                        {
                            let data = data.freeze();
                            return if is_text {
                                text(data).map(Some)
                            } else {
                                Ok(Some(Incoming::Binary(data)))
                            };
                        }
                    }
                }
                _ if !fin => return Err(refused(ProtocolError::ContinuationFragment(op))),
                OpCode::Ping => return Ok(Some(Incoming::Ping(data.freeze()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => {
                    let reason = Parser::try_parse_close_payload(&data).map_err(refused)?;
                    return Ok(Some(Incoming::Close(
                        reason.map(|r| (u16::from(r.code), r.description.unwrap_or_default())),
                    )));
                }
                OpCode::Bad => return Err(refused(ProtocolError::BadOpCode)),
            }
        }
    }
}

/// A text message: 1007 when it is not UTF-8 (RFC 6455 §8.1).
fn text(data: Bytes) -> Result<Incoming, Incoming> {
    ByteString::try_from(data)
        .map(Incoming::Text)
        .map_err(|e| Incoming::Broken(Broken::not_utf8(e.to_string())))
}

impl Stream for IncomingStream {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let decoded = this.decode();
            // Nothing left to decode: the buffer goes. An idle connection keeps no read buffer,
            // and even an empty view with no capacity left holds the chunk it was split from
            // (the last message's bytes, up to `max_frame_size`).
            if this.buf.is_empty() {
                this.buf = BytesMut::new();
            }
            match decoded {
                Ok(Some(item)) => return Poll::Ready(Some(item)),
                Ok(None) => {}
                Err(item) => {
                    this.done = true;
                    this.buf = BytesMut::new();
                    this.partial = None;
                    return Poll::Ready(Some(item));
                }
            }
            // Once the response body is gone, the socket is: nothing more is read.
            if this.out.writer_ended() {
                this.done = true;
                continue;
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if this.buf.is_empty() {
                        this.buf = BytesMut::from(bytes);
                    } else {
                        this.buf.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Incoming::Gone(e.to_string())));
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Performs the WebSocket handshake: the `101` response, whose body is `out` (see the module
/// doc), the connection's inbound stream, and the future that tells when the body ended. `Err`
/// is the HTTP error for a request that is not a valid upgrade.
pub(crate) fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    max_frame_size: usize,
    out: &Arc<Outbound>,
) -> Result<(HttpResponse, Ended, IncomingStream), actix_web::Error> {
    let mut response = actix_http::ws::handshake(req.head())?;
    let body = OutboundBody {
        out: out.clone(),
        batch: VecDeque::new(),
        done: false,
    };
    let response = HttpResponse::from(response.message_body(BoxBody::new(body))?);
    Ok((
        response,
        Ended(out.clone()),
        upgrade_stream(payload, max_frame_size, out),
    ))
}

/// The inbound side of an upgraded request.
fn upgrade_stream(
    payload: web::Payload,
    max_frame_size: usize,
    out: &Arc<Outbound>,
) -> IncomingStream {
    IncomingStream {
        payload,
        buf: BytesMut::new(),
        max_size: max_frame_size,
        partial: None,
        out: out.clone(),
        done: false,
    }
}

/// Bytes one poll of the body encodes at most: frames beyond wait for the next poll, so that
/// a full queue of large frames is not copied whole into one buffer.
const MAX_CHUNK: usize = 64 * 1024;

/// The upgrade response's body: the connection's outbound queue, encoded. Ends after the
/// close frame, or when the queue is shut without one (the connection went away).
struct OutboundBody {
    out: Arc<Outbound>,
    /// Frames taken from the queue and not yet encoded (more than [`MAX_CHUNK`] at once).
    batch: VecDeque<Frame>,
    done: bool,
}

impl OutboundBody {
    /// Encodes `frame`; true for the close frame, the last.
    fn encode(buf: &mut BytesMut, frame: Frame) -> bool {
        match frame {
            Frame::Text(t) => Parser::write_message(buf, t.as_bytes(), OpCode::Text, true, false),
            Frame::Binary(b) => Parser::write_message(buf, b, OpCode::Binary, true, false),
            Frame::Ping(b) => Parser::write_message(buf, b, OpCode::Ping, true, false),
            Frame::Pong(b) => Parser::write_message(buf, b, OpCode::Pong, true, false),
            Frame::Close(code, reason) => {
                let reason = CloseReason {
                    code: CloseCode::from(code),
                    description: (!reason.is_empty()).then_some(reason),
                };
                Parser::write_close(buf, Some(reason), false);
                return true;
            }
        }
        false
    }
}

impl MessageBody for OutboundBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.batch.is_empty() {
            let shut = this.out.take_all(&mut this.batch, cx.waker());
            if this.batch.is_empty() {
                if shut {
                    // Shut without a close frame: the connection is gone.
                    this.done = true;
                    this.out.end_writer();
                    return Poll::Ready(None);
                }
                return Poll::Pending;
            }
        }
        let want: usize = this.batch.iter().map(Frame::wire_len).sum();
        let mut buf = BytesMut::with_capacity(want.min(MAX_CHUNK + 16));
        while let Some(frame) = this.batch.pop_front() {
            if Self::encode(&mut buf, frame) {
                this.done = true;
                this.batch = VecDeque::new();
                this.out.mark_close_sent();
                this.out.end_writer();
                break;
            }
            if buf.len() >= MAX_CHUNK {
                break;
            }
        }
        if this.batch.is_empty() && this.batch.capacity() > MAX_KEPT {
            // After a burst: give the buffer back (the queue gets this one at the next batch).
            this.batch = VecDeque::new();
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        // The response is gone (the socket closed, the server stops): so is the connection.
        if !self.done {
            self.out.shut();
        }
        self.out.end_writer();
    }
}

/// Resolves once the response body ended: the close frame went out, or the socket is gone.
pub(crate) struct Ended(Arc<Outbound>);

impl Future for Ended {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_writer_ended(cx)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use actix_web::FromRequest;
    use futures_util::{FutureExt, StreamExt};

    use super::*;
    use crate::channel::outbound::SlowConsumerPolicy;

    /// A stream reading what `feed` is given, as the upgrade's payload would.
    async fn stream() -> (impl FnMut(Bytes), IncomingStream) {
        let (req, _) = TestRequest::default().to_http_parts();
        let (mut tx, payload) = actix_http::h1::Payload::create(false);
        let mut payload = actix_web::dev::Payload::from(payload);
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();
        let out = Arc::new(Outbound::new(16, SlowConsumerPolicy::default()));
        (
            move |b| tx.feed_data(b),
            upgrade_stream(payload, 1 << 20, &out),
        )
    }

    fn client_frame(text: &str) -> Bytes {
        let mut frame = BytesMut::new();
        Parser::write_message(&mut frame, text, OpCode::Text, true, true);
        frame.freeze()
    }

    #[actix_rt::test]
    async fn an_idle_stream_keeps_nothing_of_the_last_message() {
        let (mut feed, mut incoming) = stream().await;
        // Shared, as a chunk of the dispatcher's read buffer is: the stream copies it.
        let chunk = client_frame(&"x".repeat(60_000));
        feed(chunk.clone());
        let Some(Some(Incoming::Text(text))) = incoming.next().now_or_never() else {
            panic!("the message was not decoded");
        };
        // The message's bytes are the handler's alone: an idle connection holds none of them
        // (it held the whole message, up to `max_frame_size`, until its next one).
        assert!(text.into_bytes().is_unique());
        // Nothing more has arrived: the stream waits.
        assert!(incoming.next().now_or_never().is_none());
    }

    #[actix_rt::test]
    async fn a_message_split_across_chunks_is_decoded_once_whole() {
        let (mut feed, mut incoming) = stream().await;
        let frame = client_frame("hello, world");
        feed(frame.slice(..5));
        assert!(incoming.next().now_or_never().is_none());
        feed(frame.slice(5..));
        let Some(Some(Incoming::Text(text))) = incoming.next().now_or_never() else {
            panic!("the message was not decoded");
        };
        assert_eq!(&*text, "hello, world");
        assert!(text.into_bytes().is_unique());
    }
}
