//! Broadcaster actor: the dashboard's live feed (Server-Sent Events on `/api/events`).
//!
//! Owns: one small bounded queue per subscribed browser and the latest encoded event.
//! Receives: [`Subscribe`] from the `/api/events` handler, [`Stop`] from the HTTP shutdown
//! path. Sends: one [`registry::GetSnapshotParts`] per tick to its snapshot source (the Registry),
//! and only while at least one browser listens.
//!
//! Every [`EVENTS_INTERVAL`] the snapshot is fetched once, encoded once, and the same bytes are
//! offered to every browser's queue with `try_send`, so the cost per browser is a reference
//! count, and a slow browser can never hold up the server: when its queue
//! ([`CLIENT_QUEUE_EVENTS`]) is full its event is skipped (it gets the next, newer one), and
//! after [`MAX_SKIPPED_EVENTS`] skips in a row its stream is closed (the browser's
//! `EventSource` reconnects by itself). At most [`MAX_EVENT_CLIENTS`] browsers at once, and
//! at most [`MAX_EVENT_CLIENTS_PER_IP`] from one address, so that one client cannot take
//! every slot and leave the dashboard dead for everyone else.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::server::registry;
use crate::snapshot::Snapshot;

/// How often a snapshot is pushed to each browser.
pub const EVENTS_INTERVAL: Duration = Duration::from_secs(1);
/// Events queued for one browser before its events are skipped.
pub const CLIENT_QUEUE_EVENTS: usize = 4;
/// A browser whose queue stayed full this many ticks in a row is disconnected.
pub const MAX_SKIPPED_EVENTS: u32 = 10;
/// Most browsers subscribed at once; more are refused (HTTP 503).
pub const MAX_EVENT_CLIENTS: usize = 256;
/// Most browsers subscribed at once from one IP address (a few tabs of a few people behind
/// one NAT); more from that address are refused (HTTP 503).
pub const MAX_EVENT_CLIENTS_PER_IP: usize = 8;
/// Sent first on every stream: how long the browser waits before reconnecting (ms).
const RETRY_PREAMBLE: &[u8] = b"retry: 2000\n\n";

/// One browser's stream: the receiving end of its bounded queue of encoded events.
pub type EventStream = mpsc::Receiver<Bytes>;

/// Subscribes a browser at `ip`. The first event (the latest snapshot, when fresh) comes at
/// once.
#[derive(Message)]
#[rtype(result = "Result<EventStream, Refused>")]
pub struct Subscribe {
    pub ip: IpAddr,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many dashboard connections (at most {MAX_EVENT_CLIENTS})")]
    TooMany,
    #[error(
        "too many dashboard connections from this address (at most {MAX_EVENT_CLIENTS_PER_IP}); close a tab"
    )]
    TooManyFromIp,
    #[error("the server is shutting down")]
    Stopped,
}

/// Ends every stream and refuses new ones (server shutdown: open streams would otherwise
/// hold the HTTP server's graceful stop until its timeout).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// How many browsers are subscribed (tests, diagnostics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Clients;

struct Client {
    tx: mpsc::Sender<Bytes>,
    ip: IpAddr,
    /// Ticks in a row whose event did not fit in the queue.
    skipped: u32,
}

/// See the module documentation.
pub struct Broadcaster {
    source: Recipient<registry::GetSnapshotParts>,
    interval: Duration,
    clients: Vec<Client>,
    /// The latest encoded event and when it was made.
    last: Option<(Instant, Bytes)>,
    /// A snapshot request is on its way (a slow source never gets two at once).
    in_flight: bool,
    stopped: bool,
}

impl Broadcaster {
    /// A broadcaster that asks `source` for a snapshot every `interval` while anyone listens.
    pub fn new(source: Recipient<registry::GetSnapshotParts>, interval: Duration) -> Self {
        Self {
            source,
            interval,
            clients: Vec::new(),
            last: None,
            in_flight: false,
            stopped: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.clients.is_empty() || self.in_flight || self.stopped {
            return;
        }
        self.in_flight = true;
        self.source
            .send(registry::GetSnapshotParts)
            .into_actor(self)
            .map(|result, this, _| {
                this.in_flight = false;
                match result {
                    // Built here, on the broadcaster's thread, not the Registry's.
                    Ok(parts) => this.publish(&parts.into_snapshot()),
                    Err(e) => tracing::warn!("dashboard feed: no snapshot: {e}"),
                }
            })
            .spawn(ctx);
    }

    /// Encodes `snapshot` once and offers it to every browser.
    fn publish(&mut self, snapshot: &Snapshot) {
        if self.stopped {
            return;
        }
        let event = match encode_event(snapshot) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("dashboard feed: cannot encode the snapshot: {e}");
                return;
            }
        };
        self.last = Some((Instant::now(), event.clone()));
        self.clients.retain_mut(|client| match client.tx.try_send(event.clone()) {
            Ok(()) => {
                client.skipped = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                client.skipped += 1;
                if client.skipped >= MAX_SKIPPED_EVENTS {
                    tracing::info!(
                        "dashboard feed: closing a browser that took no event for {MAX_SKIPPED_EVENTS} ticks"
                    );
                    false
                } else {
                    true
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// One SSE event (`data: <snapshot JSON>`); serde_json writes no raw newline, so one `data:`
/// line carries it all.
pub fn encode_event(snapshot: &Snapshot) -> serde_json::Result<Bytes> {
    let mut out = Vec::with_capacity(512 + snapshot.agents.len() * 512);
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut out, snapshot)?;
    out.extend_from_slice(b"\n\n");
    Ok(Bytes::from(out))
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |this, ctx| this.tick(ctx));
    }
}

impl Handler<Subscribe> for Broadcaster {
    type Result = Result<EventStream, Refused>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if self.stopped {
            return Err(Refused::Stopped);
        }
        self.clients.retain(|c| !c.tx.is_closed());
        if self.clients.len() >= MAX_EVENT_CLIENTS {
            return Err(Refused::TooMany);
        }
        if self.clients.iter().filter(|c| c.ip == msg.ip).count() >= MAX_EVENT_CLIENTS_PER_IP {
            return Err(Refused::TooManyFromIp);
        }
        // Room for the preamble, the latest event and the next ticks' events.
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE_EVENTS + 2);
        let _ = tx.try_send(Bytes::from_static(RETRY_PREAMBLE));
        match &self.last {
            Some((at, event)) if at.elapsed() < self.interval * 2 => {
                let _ = tx.try_send(event.clone());
            }
            // Nothing recent (nobody was listening): fetch one now rather than at the next tick.
            _ => ctx.notify(Tick),
        }
        self.clients.push(Client {
            tx,
            ip: msg.ip,
            skipped: 0,
        });
        Ok(rx)
    }
}

/// An extra tick, for a first subscriber after a quiet time.
#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Handler<Tick> for Broadcaster {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) {
        self.tick(ctx);
    }
}

impl Handler<Stop> for Broadcaster {
    type Result = ();

    fn handle(&mut self, _: Stop, _: &mut Self::Context) {
        self.stopped = true;
        self.clients.clear();
        self.last = None;
    }
}

impl Handler<Clients> for Broadcaster {
    type Result = usize;

    fn handle(&mut self, _: Clients, _: &mut Self::Context) -> usize {
        self.clients.retain(|c| !c.tx.is_closed());
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::snapshot::{SNAPSHOT_VERSION, ServerInfo, Summary};

    /// Stands in for the Registry: answers snapshots numbered by `ts_ms`, counting requests.
    struct FakeRegistry {
        asked: Arc<AtomicU64>,
    }

    impl Actor for FakeRegistry {
        type Context = Context<Self>;
    }

    impl Handler<registry::GetSnapshotParts> for FakeRegistry {
        type Result = MessageResult<registry::GetSnapshotParts>;

        fn handle(&mut self, _: registry::GetSnapshotParts, _: &mut Self::Context) -> Self::Result {
            let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
            let server = ServerInfo {
                id: "s".into(),
                name: "test".into(),
                version: "0".into(),
                listen: "127.0.0.1:1".into(),
                http: None,
                auth: None,
                fingerprint: None,
            };
            MessageResult(registry::SnapshotParts::empty(n, server))
        }
    }

    fn ts_of(event: &Bytes) -> Option<u64> {
        let text = std::str::from_utf8(event).ok()?;
        let json = text.strip_prefix("data: ")?.trim_end();
        let snapshot: Snapshot = serde_json::from_str(json).ok()?;
        Some(snapshot.ts_ms)
    }

    const TICK: Duration = Duration::from_millis(20);
    const IP_A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// Proves: one address gets at most [`MAX_EVENT_CLIENTS_PER_IP`] streams, another address
    /// still gets one, and a closed stream frees its address's slot.
    #[actix_rt::test]
    async fn one_address_cannot_take_every_slot() {
        let fake = FakeRegistry {
            asked: Arc::new(AtomicU64::new(0)),
        }
        .start();
        let broadcaster = Broadcaster::new(fake.recipient(), TICK).start();
        let mut held = Vec::new();
        for _ in 0..MAX_EVENT_CLIENTS_PER_IP {
            match broadcaster.send(Subscribe { ip: IP_A }).await {
                Ok(Ok(rx)) => held.push(rx),
                other => panic!("subscribe refused: {other:?}"),
            }
        }
        let refused = broadcaster.send(Subscribe { ip: IP_A }).await;
        assert!(
            matches!(refused, Ok(Err(Refused::TooManyFromIp))),
            "{refused:?}"
        );
        let other = broadcaster.send(Subscribe { ip: IP_B }).await;
        assert!(matches!(other, Ok(Ok(_))), "another address: {other:?}");
        drop(held.pop());
        let again = broadcaster.send(Subscribe { ip: IP_A }).await;
        assert!(matches!(again, Ok(Ok(_))), "after one closed: {again:?}");
    }

    /// Proves: nobody listening means no snapshot requests; one request per tick serves every
    /// browser; a browser that never reads is disconnected while a reading one keeps getting
    /// newer events; Stop ends every stream.
    #[actix_rt::test]
    async fn one_fetch_per_tick_and_slow_browsers_are_dropped() {
        let asked = Arc::new(AtomicU64::new(0));
        let fake = FakeRegistry {
            asked: asked.clone(),
        }
        .start();
        let broadcaster = Broadcaster::new(fake.recipient(), TICK).start();
        tokio::time::sleep(TICK * 5).await;
        assert_eq!(
            asked.load(Ordering::SeqCst),
            0,
            "asked with nobody listening"
        );

        let Ok(Ok(mut fast)) = broadcaster.send(Subscribe { ip: IP_A }).await else {
            panic!("subscribe refused");
        };
        let Ok(Ok(slow)) = broadcaster.send(Subscribe { ip: IP_A }).await else {
            panic!("subscribe refused");
        };
        assert_eq!(fast.recv().await.as_deref(), Some(RETRY_PREAMBLE));
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while broadcaster.send(Clients).await.unwrap_or(0) == 2 {
            assert!(Instant::now() < deadline, "slow browser never dropped");
            if let Ok(Some(event)) = tokio::time::timeout(TICK * 5, fast.recv()).await {
                seen.extend(ts_of(&event));
            }
        }
        assert!(slow.is_closed(), "slow browser's stream still open");
        let requests = asked.load(Ordering::SeqCst);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]) && seen.len() >= MAX_SKIPPED_EVENTS as usize,
            "fast browser saw {seen:?}"
        );
        // Two browsers, yet about one request per event (not two).
        assert!(
            requests <= seen.len() as u64 + 2,
            "{requests} requests for {} events",
            seen.len()
        );

        broadcaster.do_send(Stop);
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while fast.recv().await.is_some() {}
        })
        .await;
        assert!(end.is_ok(), "stream not ended by Stop");
        assert_eq!(
            broadcaster
                .send(Subscribe { ip: IP_A })
                .await
                .ok()
                .and_then(|r| r.err()),
            Some(Refused::Stopped)
        );
    }

    /// Proves: the event is one `data:` line of the snapshot JSON, ended by a blank line.
    #[test]
    fn event_is_one_data_line() {
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            ts_ms: 7,
            server: ServerInfo {
                id: "a\nb".into(),
                name: "n".into(),
                version: "0".into(),
                listen: "x".into(),
                http: None,
                auth: None,
                fingerprint: None,
            },
            summary: Summary::default(),
            agents: Vec::new(),
            store: None,
            pending: Vec::new(),
        };
        let Ok(event) = encode_event(&snapshot) else {
            panic!("encode failed");
        };
        let text = String::from_utf8_lossy(&event);
        assert!(text.starts_with("data: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 2);
        assert_eq!(ts_of(&event), Some(7));
    }
}
