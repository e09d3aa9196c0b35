//! A connection's outbound queue: bounded, shared with whoever sends to the connection.
//!
//! Replies, pushes and topic deliveries all enter here. Senders never wait: a push either
//! lands in the queue or the channel's [`SlowConsumerPolicy`] applies. The transport's writer
//! (the upgrade response's body) takes everything queued at once, so frames that pile up while
//! the socket is busy leave in one write, and wakes only for the first frame of a batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;

use crate::protocol::close_code;

/// What happens when a connection's outbound queue is full.
///
/// ```
/// use switchboard::SlowConsumerPolicy;
///
/// let policy = SlowConsumerPolicy::Close { code: 1013 };
/// assert_ne!(policy, SlowConsumerPolicy::DropNewest);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Drop the frame that did not fit and count it (see `Channel::dropped`).
    #[default]
    DropNewest,
    /// Close the connection with this code (1008 or 1013 are the usual ones) and the reason
    /// `slow consumer`. Frames still queued are discarded.
    Close {
        /// The close code sent to the client.
        code: u16,
    },
}

/// A frame on its way to the client.
#[derive(Clone, Debug)]
pub(crate) enum Frame {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(u16, String),
}

impl Frame {
    /// Its size on the wire (payload and the longest header), to size the write buffer.
    pub(crate) fn wire_len(&self) -> usize {
        10 + match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
            Frame::Close(_, reason) => 2 + reason.len(),
        }
    }
}

/// How a frame may be treated when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Pushes and deliveries: subject to the slow-consumer policy.
    Droppable,
    /// Replies and control frames: the client is waiting for them. They may use a second
    /// allowance of the same size before the connection is closed as a slow consumer.
    Essential,
}

/// Why a push did not enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Dropped under the drop-newest policy.
    Dropped,
    /// The connection is closing.
    Closed,
}

struct State {
    frames: VecDeque<Frame>,
    closing: bool,
    /// The close frame queued when closing started (code, reason): what a disconnect handler
    /// can report. `None` when the socket went away without one.
    closed_with: Option<(u16, String)>,
}

/// Frames' worth of buffer the writer keeps between batches: a burst larger than this gives its
/// buffer back once written, so an idle connection holds little queue memory.
pub(crate) const MAX_KEPT: usize = 16;

/// Longest close reason a close frame can carry: a control frame's payload is at most 125
/// bytes (RFC 6455 §5.5), two of which are the code.
pub(crate) const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes, at a character boundary (it must stay UTF-8).
pub(crate) fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

pub(crate) struct Outbound {
    state: Mutex<State>,
    capacity: usize,
    policy: SlowConsumerPolicy,
    dropped: AtomicU64,
    waker: AtomicWaker,
    close_sent: AtomicBool,
    /// The writer (the response body) ended: close frame out, or the socket gone.
    writer_ended: AtomicBool,
    /// Who waits for that (the connection actor).
    ended_waker: AtomicWaker,
    /// The channel, for metrics' labels.
    #[cfg(feature = "metrics")]
    channel: Arc<str>,
}

impl Outbound {
    pub(crate) fn new(capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Outbound {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                closing: false,
                closed_with: None,
            }),
            capacity: capacity.max(1),
            policy,
            dropped: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            close_sent: AtomicBool::new(false),
            writer_ended: AtomicBool::new(false),
            ended_waker: AtomicWaker::new(),
            #[cfg(feature = "metrics")]
            channel: Arc::from(""),
        }
    }

    /// Names the channel in this queue's metrics.
    pub(crate) fn for_channel(self, _channel: &Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        return Outbound {
            channel: _channel.clone(),
            ..self
        };
        #[cfg(not(feature = "metrics"))]
        self
    }

    /// Counts a frame pushed to this one connection (not a reply, not a delivery).
    #[inline]
    pub(crate) fn note_push(&self) {
        #[cfg(feature = "metrics")]
        crate::meter::pushed(&self.channel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every mutation
        // is a single VecDeque call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a text frame.
    pub(crate) fn push_text(&self, text: ByteString, class: Class) -> Result<(), Refused> {
        self.push(Frame::Text(text), class)
    }

    pub(crate) fn push(&self, frame: Frame, class: Class) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.closing {
            return Err(Refused::Closed);
        }
        let limit = match class {
            Class::Droppable => self.capacity,
            Class::Essential => self.capacity * 2,
        };
        if st.frames.len() >= limit {
            match (self.policy, class) {
                (SlowConsumerPolicy::DropNewest, Class::Droppable) => {
                    drop(st);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    #[cfg(feature = "metrics")]
                    crate::meter::dropped(&self.channel);
                    return Err(Refused::Dropped);
                }
                (SlowConsumerPolicy::Close { code }, _) => {
                    Self::start_close(&mut st, code, "slow consumer");
                }
                (SlowConsumerPolicy::DropNewest, Class::Essential) => {
                    Self::start_close(&mut st, close_code::POLICY, "slow consumer");
                }
            }
            #[cfg(feature = "metrics")]
            crate::meter::slow_consumer_closed(&self.channel);
            drop(st);
            self.waker.wake();
            return Err(Refused::Closed);
        }
        let was_empty = st.frames.is_empty();
        st.frames.push_back(frame);
        drop(st);
        // The writer drains the whole queue each time it runs and re-arms when it finds it
        // empty, so only the first frame of a batch needs to wake it.
        if was_empty {
            self.waker.wake();
        }
        Ok(())
    }

    fn start_close(st: &mut State, code: u16, reason: &str) {
        st.frames.clear();
        Self::queue_close(st, code, reason);
    }

    fn queue_close(st: &mut State, code: u16, reason: &str) {
        // The transport hands close frames to the socket as they are, so the reason is cut
        // here: every close (handlers, the connections API, the hub) passes through.
        let reason = close_reason(reason).to_owned();
        st.frames.push_back(Frame::Close(code, reason.clone()));
        st.closed_with = Some((code, reason));
        st.closing = true;
    }

    /// Starts closing: queued frames still go out, then the close frame. Later pushes are
    /// refused. Returns false when the connection was already closing. A reason longer than
    /// [`MAX_CLOSE_REASON`] bytes is cut to fit the close frame.
    pub(crate) fn close(&self, code: u16, reason: &str) -> bool {
        let mut st = self.lock();
        if st.closing {
            return false;
        }
        Self::queue_close(&mut st, code, reason);
        drop(st);
        self.waker.wake();
        true
    }

    /// The close code and reason the connection was closed with, once closing started with a
    /// close frame; `None` while open or when the socket went away without one.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn closed_with(&self) -> Option<(u16, String)> {
        self.lock().closed_with.clone()
    }

    /// Marks the queue closed without sending anything (the socket is gone).
    pub(crate) fn shut(&self) {
        let mut st = self.lock();
        st.closing = true;
        st.frames.clear();
        drop(st);
        self.waker.wake();
    }

    /// Gives back the queue's memory when it is empty (an idle connection keeps none).
    pub(crate) fn shrink_idle(&self) {
        let mut st = self.lock();
        if st.frames.is_empty() && st.frames.capacity() > 0 {
            st.frames = VecDeque::new();
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Moves every queued frame into `out` (empty), registering the writer's waker for the
    /// next ones. Returns whether the queue is closing. Called only by the transport's writer.
    pub(crate) fn take_all(&self, out: &mut VecDeque<Frame>, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        let mut st = self.lock();
        // Swapped, not copied: the queue gets `out`'s empty buffer, so that neither side
        // grows its buffer anew for every batch. The writer bounds what it keeps of it
        // (`MAX_KEPT`), the heartbeat gives the queue's back when idle (`shrink_idle`).
        std::mem::swap(out, &mut st.frames);
        st.closing
    }

    /// Moves every queued frame into `out` (appended if it still holds some), or registers the
    /// writer's waker when there are none. The HTTP transport's writer drains this way.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Frame>, waker: &std::task::Waker) {
        self.waker.register(waker);
        let mut st = self.lock();
        if out.is_empty() {
            std::mem::swap(out, &mut st.frames);
        } else {
            out.extend(st.frames.drain(..));
        }
    }

    /// The writer ended (the close frame is out, or the socket is gone).
    pub(crate) fn end_writer(&self) {
        self.writer_ended.store(true, Ordering::Release);
        self.ended_waker.wake();
    }

    /// Whether the writer ended.
    pub(crate) fn writer_ended(&self) -> bool {
        self.writer_ended.load(Ordering::Acquire)
    }

    /// Ready once the writer ended.
    pub(crate) fn poll_writer_ended(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.writer_ended() {
            return std::task::Poll::Ready(());
        }
        self.ended_waker.register(cx.waker());
        if self.writer_ended() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Registers a writer that is not draining right now (its client is not reading) to be
    /// woken by the next push into an empty queue or by a close.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    pub(crate) fn mark_close_sent(&self) {
        self.close_sent.store(true, Ordering::Release);
    }

    pub(crate) fn close_sent(&self) -> bool {
        self.close_sent.load(Ordering::Acquire)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn policy(&self) -> SlowConsumerPolicy {
        self.policy
    }

    /// Frames dropped under the drop-newest policy so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames waiting in the queue.
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &Outbound) -> Vec<Frame> {
        let mut out = VecDeque::new();
        q.take_all(&mut out, futures_util::task::noop_waker_ref());
        out.into()
    }

    #[test]
    fn drop_newest_counts_and_keeps_essentials() {
        let q = Outbound::new(2, SlowConsumerPolicy::DropNewest);
        for _ in 0..3 {
            let _ = q.push_text("x".into(), Class::Droppable);
        }
        assert_eq!(q.dropped(), 1);
        assert!(q.push_text("reply".into(), Class::Essential).is_ok());
        assert_eq!(drain(&q).len(), 3);
        assert!(!q.is_closing());
    }

    #[test]
    fn close_policy_discards_and_closes() {
        let q = Outbound::new(2, SlowConsumerPolicy::Close { code: 1013 });
        let _ = q.push_text("a".into(), Class::Droppable);
        let _ = q.push_text("b".into(), Class::Droppable);
        assert_eq!(
            q.push_text("c".into(), Class::Droppable),
            Err(Refused::Closed)
        );
        let frames = drain(&q);
        assert!(matches!(frames.as_slice(), [Frame::Close(1013, _)]));
        assert_eq!(
            q.push_text("d".into(), Class::Essential),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let q = Outbound::new(8, SlowConsumerPolicy::DropNewest);
        // 122 ASCII bytes then a 3-byte character: cut before it, not inside it.
        let reason = format!("{}€tail", "x".repeat(122));
        assert!(q.close(4000, &reason));
        let frames = drain(&q);
        let [Frame::Close(4000, sent)] = frames.as_slice() else {
            panic!("expected one close frame, got {frames:?}");
        };
        assert_eq!(sent, &"x".repeat(122));
        assert_eq!(q.closed_with(), Some((4000, "x".repeat(122))));
        assert_eq!(close_reason("short"), "short");
        assert_eq!(close_reason(&"y".repeat(200)).len(), MAX_CLOSE_REASON);
    }

    #[test]
    fn close_keeps_queued_frames_first() {
        let q = Outbound::new(8, SlowConsumerPolicy::DropNewest);
        let _ = q.push_text("a".into(), Class::Droppable);
        assert!(q.close(1000, "bye"));
        assert!(!q.close(1000, "again"));
        let frames = drain(&q);
        assert!(matches!(
            frames.as_slice(),
            [Frame::Text(_), Frame::Close(1000, _)]
        ));
    }
}
