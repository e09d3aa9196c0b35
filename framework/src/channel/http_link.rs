//! The HTTP transport's moving parts: a connection's downstream stream (Server-Sent Events) and
//! its upstream batches (`POST`), joined by one shared [`HttpLink`].
//!
//! - [`HttpSource`] is the connection actor's inbound side: the frames of upstream batches, in
//!   `Switchboard-Seq` order (early batches wait in a bounded reorder window).
//! - [`HttpWriter`] is its outbound side: it drains the connection's [`Outbound`] queue the way
//!   the WebSocket writer does, encodes the frames as SSE events and hands them to the link.
//! - [`SseBody`] is the response body actix-web writes out; dropping it (the client went
//!   away) ends the connection.
//!
//! The link holds at most [`DOWNSTREAM_LIMIT`] bytes (plus one drained batch) for the body:
//! beyond it the writer stops draining and the outbound queue's slow-consumer policy decides,
//! as it does for a WebSocket.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;

use super::outbound::{Frame, Outbound};
use super::transport::Incoming;
use crate::protocol::close_code;

/// Bytes the link buffers for the response body before the writer stops draining the
/// outbound queue (the body takes them all at once whenever actix-web can write).
pub(crate) const DOWNSTREAM_LIMIT: usize = 64 * 1024;

/// Length of a connection's secret, in bytes (256 bits).
pub(crate) const SECRET_LEN: usize = 32;

/// What an upstream batch carries: its frames, in order.
pub(crate) type Batch = Vec<Incoming>;

/// Why a batch was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The reorder window (or the frames waiting for the connection) is full: 429.
    Full,
    /// The connection is closed or closing: 404.
    Closed,
}

/// What happened to a batch that was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Queued for the connection (in order, or waiting for the ones before it).
    Queued,
    /// Its number was handled (or is waiting) already: acknowledged, ignored.
    Duplicate,
}

struct State {
    // Upstream.
    ready: VecDeque<Incoming>,
    next_seq: u64,
    early: BTreeMap<u64, Batch>,
    source: Option<Waker>,
    // Downstream.
    out: BytesMut,
    body: Option<Waker>,
    writer: Option<Waker>,
    /// Nothing more will be written: the close event was, or the connection ended.
    finished: bool,
    /// The response body was dropped: the client went away (or the body ended).
    body_gone: bool,
    /// The connection actor no longer reads upstream frames.
    source_gone: bool,
}

/// A connection's HTTP transport state, shared by its actor (source and writer), its response
/// body and the `POST`s that reach it (through the hub's registry entry).
pub(crate) struct HttpLink {
    secret: [u8; SECRET_LEN],
    /// Early batches held for reordering.
    max_pending: usize,
    /// Frames that may wait for the connection actor to take them.
    max_ready: usize,
    state: Mutex<State>,
}

impl HttpLink {
    /// A new link whose body starts with `first` (the `open` event).
    pub(crate) fn new(
        secret: [u8; SECRET_LEN],
        max_pending: usize,
        max_ready: usize,
        first: &[u8],
    ) -> Self {
        let mut out = BytesMut::with_capacity(first.len());
        out.extend_from_slice(first);
        HttpLink {
            secret,
            max_pending: max_pending.max(1),
            max_ready: max_ready.max(1),
            state: Mutex::new(State {
                ready: VecDeque::new(),
                next_seq: 0,
                early: BTreeMap::new(),
                source: None,
                out,
                body: None,
                writer: None,
                finished: false,
                body_gone: false,
                source_gone: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a single collection call or flag: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `secret` is this connection's, compared in constant time.
    pub(crate) fn secret_matches(&self, secret: &[u8]) -> bool {
        constant_time_eq(&self.secret, secret)
    }

    /// Hands batch number `seq` to the connection: in order at once, early ones once the
    /// batches before them arrived, duplicates acknowledged and ignored.
    pub(crate) fn offer(&self, seq: u64, batch: Batch) -> Result<Taken, Refused> {
        let mut st = self.lock();
        if st.body_gone || st.source_gone || st.finished {
            return Err(Refused::Closed);
        }
        if seq < st.next_seq || st.early.contains_key(&seq) {
            return Ok(Taken::Duplicate);
        }
        if seq > st.next_seq {
            if st.early.len() >= self.max_pending {
                return Err(Refused::Full);
            }
            st.early.insert(seq, batch);
            return Ok(Taken::Queued);
        }
        if st.ready.len() >= self.max_ready {
            return Err(Refused::Full);
        }
        let was_empty = st.ready.is_empty();
        Self::take_in_order(&mut st, batch);
        loop {
            let seq = st.next_seq;
            let Some(next) = st.early.remove(&seq) else {
                break;
            };
            Self::take_in_order(&mut st, next);
        }
        let waker = if was_empty { st.source.take() } else { None };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(Taken::Queued)
    }

    fn take_in_order(st: &mut State, batch: Batch) {
        st.next_seq += 1;
        if batch.is_empty() {
            // An empty batch (a heartbeat answer) still counts as the client's activity.
            st.ready.push_back(Incoming::Pong);
        } else {
            st.ready.extend(batch);
        }
    }

    /// The client asked to close (`DELETE`): handled after the frames already taken.
    pub(crate) fn request_close(&self) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.body_gone || st.source_gone || st.finished {
            return Err(Refused::Closed);
        }
        st.ready
            .push_back(Incoming::Close(Some((close_code::NORMAL, String::new()))));
        let waker = st.source.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh secret: 256 bits from the operating system's generator.
pub(crate) fn new_secret() -> Result<[u8; SECRET_LEN], getrandom::Error> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

/// A secret as the client sees it: base64url, no padding (43 characters).
pub(crate) fn secret_text(secret: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
}

/// A secret as the client sends it back, decoded; `None` when it is not base64url.
pub(crate) fn parse_secret(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
}

/// The connection actor's inbound side over HTTP: upstream frames in batch order. It ends
/// once the response body is gone and the frames taken before are handled.
pub(crate) struct HttpSource {
    link: Arc<HttpLink>,
}

impl HttpSource {
    pub(crate) fn new(link: Arc<HttpLink>) -> Self {
        HttpSource { link }
    }
}

impl Stream for HttpSource {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let mut st = self.link.lock();
        if let Some(item) = st.ready.pop_front() {
            if st.ready.is_empty() && st.ready.capacity() > 64 {
                st.ready = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        if st.body_gone {
            return Poll::Ready(None);
        }
        st.source = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        let mut st = self.link.lock();
        st.source_gone = true;
        st.ready.clear();
        st.early.clear();
    }
}

/// Drains a connection's outbound queue into its HTTP link as SSE events. Resolves once the
/// close event is handed over, the body is gone, or a close could not get through a body
/// nobody reads within `close_timeout`.
pub(crate) struct HttpWriter {
    out: Arc<Outbound>,
    link: Arc<HttpLink>,
    batch: VecDeque<Frame>,
    close_timeout: Duration,
    stuck: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpWriter {
    pub(crate) fn new(out: Arc<Outbound>, link: Arc<HttpLink>, close_timeout: Duration) -> Self {
        HttpWriter {
            out,
            link,
            batch: VecDeque::new(),
            close_timeout,
            stuck: None,
        }
    }

    fn finish(&self, st: &mut State) -> Option<Waker> {
        st.finished = true;
        st.body.take()
    }
}

impl Future for HttpWriter {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let mut st = this.link.lock();
            if st.body_gone {
                this.finish(&mut st);
                drop(st);
                this.out.shut();
                return Poll::Ready(());
            }
            if st.out.len() >= DOWNSTREAM_LIMIT {
                // Nobody reads the body right now: wait for it, and for a close started
                // meanwhile (slow consumer, drain, idle timeout), which gets `close_timeout`
                // to get through.
                st.writer = Some(cx.waker().clone());
                drop(st);
                this.out.register(cx.waker());
                let closing = this.out.is_closing()
                    || this.batch.iter().any(|f| matches!(f, Frame::Close(..)));
                if !closing {
                    return Poll::Pending;
                }
                let timeout = this.close_timeout;
                let sleep = this
                    .stuck
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let mut st = this.link.lock();
                let body = this.finish(&mut st);
                drop(st);
                this.out.shut();
                if let Some(w) = body {
                    w.wake();
                }
                return Poll::Ready(());
            }
            // Reading again: a later close gets its full `close_timeout`.
            this.stuck = None;
            if !this.batch.is_empty() {
                let was_empty = st.out.is_empty();
                let mut closed = false;
                while let Some(frame) = this.batch.pop_front() {
                    if encode(frame, &mut st.out) {
                        closed = true;
                        break;
                    }
                }
                let body = if closed {
                    this.batch.clear();
                    this.finish(&mut st)
                } else if was_empty {
                    st.body.take()
                } else {
                    None
                };
                drop(st);
                if let Some(w) = body {
                    w.wake();
                }
                if closed {
                    this.out.mark_close_sent();
                    return Poll::Ready(());
                }
                continue;
            }
            drop(st);
            this.out.drain_into(&mut this.batch, cx.waker());
            if this.batch.is_empty() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for HttpWriter {
    fn drop(&mut self) {
        // The connection ended (its actor stopped): the body ends after what is buffered.
        let mut st = self.link.lock();
        let body = self.finish(&mut st);
        drop(st);
        if let Some(w) = body {
            w.wake();
        }
    }
}

/// Appends `frame` as an SSE event; true for the close event (the last one).
fn encode(frame: Frame, out: &mut BytesMut) -> bool {
    match frame {
        Frame::Text(t) => data_lines(t.as_bytes(), out),
        Frame::Binary(b) => {
            out.extend_from_slice(b"event: binary\ndata: ");
            let start = out.len();
            let len = base64::encoded_len(b.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(&b, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + n);
            out.extend_from_slice(b"\n\n");
        }
        Frame::Ping(_) => out.extend_from_slice(b"event: ping\ndata:\n\n"),
        // Pongs answer WebSocket pings; an HTTP client sends none.
        Frame::Pong(_) => {}
        Frame::Close(code, reason) => {
            out.extend_from_slice(b"event: close\ndata: ");
            let body = serde_json::json!({ "code": code, "reason": reason });
            let _ = serde_json::to_writer((&mut *out).writer(), &body);
            out.extend_from_slice(b"\n\n");
            return true;
        }
    }
    false
}

/// `data: ` lines of one message event; a line break in the text (`\n`, `\r\n` or `\r`)
/// starts a new `data:` line, which the reader joins back with `\n`.
fn data_lines(mut text: &[u8], out: &mut BytesMut) {
    out.reserve(text.len() + 8);
    loop {
        out.extend_from_slice(b"data: ");
        match memchr::memchr2(b'\n', b'\r', text) {
            None => {
                out.extend_from_slice(text);
                break;
            }
            Some(i) => {
                out.extend_from_slice(&text[..i]);
                out.put_u8(b'\n');
                let skip = if text[i] == b'\r' && text.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                text = &text[i + skip..];
            }
        }
    }
    out.extend_from_slice(b"\n\n");
}

/// The stream's response body: what the writer handed to the link, taken all at once.
pub(crate) struct SseBody {
    link: Arc<HttpLink>,
}

impl SseBody {
    pub(crate) fn new(link: Arc<HttpLink>) -> Self {
        SseBody { link }
    }
}

impl MessageBody for SseBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut st = self.link.lock();
        if !st.out.is_empty() {
            let chunk = st.out.split().freeze();
            let writer = st.writer.take();
            drop(st);
            if let Some(w) = writer {
                w.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if st.finished {
            return Poll::Ready(None);
        }
        st.body = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut st = self.link.lock();
        st.body_gone = true;
        st.out = BytesMut::new();
        let wakers = (st.writer.take(), st.source.take());
        drop(st);
        if let Some(w) = wakers.0 {
            w.wake();
        }
        if let Some(w) = wakers.1 {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(frames: Vec<Frame>) -> String {
        let mut out = BytesMut::new();
        for f in frames {
            encode(f, &mut out);
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn events_as_sse() {
        assert_eq!(
            text(vec![Frame::Text("{\"a\":1}".into())]),
            "data: {\"a\":1}\n\n"
        );
        assert_eq!(
            text(vec![Frame::Text("one\ntwo\r\nthree\rfour".into())]),
            "data: one\ndata: two\ndata: three\ndata: four\n\n"
        );
        assert_eq!(text(vec![Frame::Text("".into())]), "data: \n\n");
        assert_eq!(
            text(vec![Frame::Binary(Bytes::from_static(b"\x00\xffab"))]),
            "event: binary\ndata: AP9hYg==\n\n"
        );
        assert_eq!(
            text(vec![Frame::Ping(Bytes::new())]),
            "event: ping\ndata:\n\n"
        );
        assert_eq!(
            text(vec![Frame::Close(1012, "service \"restart\"".into())]),
            "event: close\ndata: {\"code\":1012,\"reason\":\"service \\\"restart\\\"\"}\n\n"
        );
    }

    fn frames(link: &HttpLink) -> Vec<String> {
        let mut st = link.lock();
        st.ready
            .drain(..)
            .map(|i| match i {
                Incoming::Text(t) => t.to_string(),
                Incoming::Pong => "pong".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn batch(texts: &[&str]) -> Batch {
        texts.iter().map(|t| Incoming::Text((*t).into())).collect()
    }

    #[test]
    fn batches_in_seq_order_duplicates_ignored_window_bounded() {
        let link = HttpLink::new([7; SECRET_LEN], 2, 100, b"");
        assert_eq!(link.offer(1, batch(&["b"])), Ok(Taken::Queued));
        assert_eq!(link.offer(2, batch(&["c"])), Ok(Taken::Queued));
        assert_eq!(link.offer(2, batch(&["c"])), Ok(Taken::Duplicate));
        assert_eq!(link.offer(3, batch(&["d"])), Err(Refused::Full));
        assert!(frames(&link).is_empty(), "waiting for 0");
        assert_eq!(link.offer(0, batch(&["a"])), Ok(Taken::Queued));
        assert_eq!(frames(&link), ["a", "b", "c"]);
        assert_eq!(link.offer(0, batch(&["a"])), Ok(Taken::Duplicate));
        assert_eq!(link.offer(3, vec![]), Ok(Taken::Queued));
        assert_eq!(frames(&link), ["pong"]);
        assert!(link.secret_matches(&[7; SECRET_LEN]));
        assert!(!link.secret_matches(&[8; SECRET_LEN]));
        assert!(!link.secret_matches(&[7; 3]));
    }

    #[test]
    fn secrets_are_43_characters_of_base64url() {
        let s = new_secret().unwrap();
        let t = secret_text(&s);
        assert_eq!(t.len(), 43);
        assert_eq!(parse_secret(&t).unwrap(), s);
        assert_ne!(new_secret().unwrap(), s);
    }
}
