//! How many history answers the HTTP side works on and holds at once ([`Gate`]), and the
//! body that holds its place until it has been handed over ([`Gate::body`]).
//!
//! A history answer is bounded in size (`store::MAX_HISTORY_CELLS`), but a client that asks
//! and then reads slowly (or never) would keep one in memory per request. So at most
//! [`MAX_HISTORY_REQUESTS`] are read, encoded and sent at a time: a request waits up to
//! [`HISTORY_QUEUE_WAIT`] for its turn (then 503 with `Retry-After`), and keeps its turn
//! until its body has gone out in [`CHUNK`]-sized pieces (the connection takes the next piece
//! only once it has room for it). A body not taken within [`HISTORY_SEND_TIMEOUT`] is
//! dropped and its turn given back (the client sees a short body); what then stays held is
//! the connection's own write buffer, a few KiB.
//!
//! No actor: the HTTP handlers share one `Gate`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// History requests read, encoded and sent at once (the store keeps as many read
/// connections).
pub const MAX_HISTORY_REQUESTS: usize = crate::server::store::READ_CONNECTIONS;
/// Longest a history request waits for its turn before it is answered 503.
pub const HISTORY_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Longest a client may take to receive a history answer; then the rest is dropped.
pub const HISTORY_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the pieces a history body is handed to the connection in.
pub const CHUNK: usize = 64 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub struct Gate {
    turns: Arc<Semaphore>,
    queue_wait: Duration,
    send_timeout: Duration,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(
            MAX_HISTORY_REQUESTS,
            HISTORY_QUEUE_WAIT,
            HISTORY_SEND_TIMEOUT,
        )
    }
}

/// One request's turn: held while its answer is read, encoded and sent.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    /// A gate of `turns` turns (at least one); requests wait `queue_wait` for one, bodies
    /// are given `send_timeout` to go out.
    pub fn new(turns: usize, queue_wait: Duration, send_timeout: Duration) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(turns.max(1))),
            queue_wait,
            send_timeout,
        }
    }

    /// Waits for a turn; `None` after the queue wait (the caller answers 503).
    pub async fn enter(&self) -> Option<Turn> {
        let turn = tokio::time::timeout(self.queue_wait, self.turns.clone().acquire_owned());
        match turn.await {
            Ok(Ok(permit)) => Some(Turn { _permit: permit }),
            _ => None,
        }
    }

    /// Turns free now.
    pub fn free(&self) -> usize {
        self.turns.available_permits()
    }

    /// `body` as a stream of [`CHUNK`]s that keeps `turn` until the last chunk has been taken,
    /// or until the send timeout (then the rest of the body and the turn are dropped, and the
    /// stream ends with an error). Must be called on a tokio runtime (it starts the timer).
    pub fn body(&self, turn: Turn, body: Bytes) -> Body {
        let state = Arc::new(Mutex::new(State::Sending { body, _turn: turn }));
        let timer = Arc::downgrade(&state);
        let timeout = self.send_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            expire(&timer);
        });
        Body { state }
    }
}

/// Drops the body and the turn of a body still being sent.
fn expire(state: &Weak<Mutex<State>>) {
    if let Some(state) = state.upgrade() {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*s, State::Sending { .. }) {
            *s = State::TimedOut;
        }
    }
}

enum State {
    Sending { body: Bytes, _turn: Turn },
    TimedOut,
    Done,
}

/// A history body: see [`Gate::body`].
pub struct Body {
    state: Arc<Mutex<State>>,
}

impl Stream for Body {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let chunk = match &mut *s {
            State::Sending { body, .. } => body.split_to(CHUNK.min(body.len())),
            State::TimedOut => {
                *s = State::Done;
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not take the history answer in time",
                ))));
            }
            State::Done => return Poll::Ready(None),
        };
        if matches!(&*s, State::Sending { body, .. } if body.is_empty()) {
            *s = State::Done; // the last chunk: the turn goes back now
        }
        if chunk.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const MS: Duration = Duration::from_millis(1);

    /// A body keeps its turn until its last chunk has been taken, and hands the whole body
    /// over in chunks of at most CHUNK bytes.
    #[tokio::test]
    async fn a_turn_is_held_until_the_body_has_been_taken() {
        let gate = Gate::new(1, 10 * MS, Duration::from_secs(60));
        let turn = gate.enter().await.unwrap();
        assert!(
            gate.enter().await.is_none(),
            "one turn: the second waits, then gives up"
        );
        let body = Bytes::from(vec![7u8; 2 * CHUNK + 5]);
        let mut stream = gate.body(turn, body);
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
            if got.len() < 2 * CHUNK + 5 {
                assert_eq!(gate.free(), 0, "held while chunks remain");
            }
        }
        assert_eq!(got.len(), 2 * CHUNK + 5);
        assert_eq!(gate.free(), 1, "given back after the last chunk");
    }

    /// A body nobody takes is dropped after the send timeout and its turn given back; the
    /// stream then ends with an error.
    #[tokio::test]
    async fn a_body_not_taken_in_time_gives_its_turn_back() {
        let gate = Gate::new(1, 10 * MS, 50 * MS);
        let turn = gate.enter().await.unwrap();
        let mut stream = gate.body(turn, Bytes::from(vec![1u8; 3 * CHUNK]));
        assert!(stream.next().await.is_some_and(|c| c.is_ok()));
        let free = tokio::time::timeout(Duration::from_secs(5), async {
            while gate.free() == 0 {
                tokio::time::sleep(5 * MS).await;
            }
        });
        assert!(free.await.is_ok(), "the turn comes back after the timeout");
        assert!(stream.next().await.is_some_and(|c| c.is_err()));
        assert!(stream.next().await.is_none());
    }

    /// A body dropped early (the client went away) gives its turn back at once.
    #[tokio::test]
    async fn a_dropped_body_gives_its_turn_back() {
        let gate = Gate::new(1, 10 * MS, Duration::from_secs(60));
        let turn = gate.enter().await.unwrap();
        drop(gate.body(turn, Bytes::from_static(b"{}")));
        assert_eq!(gate.free(), 1);
    }
}
