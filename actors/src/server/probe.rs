//! Test support: a probe actor that stands in for another actor and hands every message it
//! receives to the test, in order, through a channel; waits have a deadline.
//!
//! `Probe<E>` handles every message `M` (with no answer) that converts into the test's event
//! type `E`, so one probe can stand in for a Session (`Close`, `Durable`) or the Store
//! (`Attach`, `Append`). A probe cannot tell that nothing came; a test proves an absence by
//! order instead: it causes a later message and checks that it is the next one received.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

/// Longest a test waits for an expected message.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// See the module documentation.
pub struct Probe<E> {
    tx: mpsc::UnboundedSender<E>,
}

impl<E: 'static> Actor for Probe<E> {
    type Context = Context<Self>;
}

impl<E, M> Handler<M> for Probe<E>
where
    E: From<M> + 'static,
    M: Message<Result = ()>,
{
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Self::Context) {
        let _ = self.tx.send(E::from(msg));
    }
}

/// What a probe received, in order.
pub struct Received<E> {
    rx: mpsc::UnboundedReceiver<E>,
}

/// Starts a probe on the current actix `System`.
pub fn start<E: 'static>() -> (Addr<Probe<E>>, Received<E>) {
    let (tx, received) = channel();
    (Probe { tx }.start(), received)
}

/// The channel of a hand-written fake (one that must answer what it receives).
pub fn channel<E>() -> (mpsc::UnboundedSender<E>, Received<E>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Received { rx })
}

impl<E: std::fmt::Debug> Received<E> {
    /// The next message; panics naming `what` was expected if none comes within [`DEADLINE`].
    pub async fn next(&mut self, what: &str) -> E {
        match tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("waiting for {what}: the probe is gone"),
            Err(_) => panic!("waiting for {what}: nothing within {DEADLINE:?}"),
        }
    }
}
