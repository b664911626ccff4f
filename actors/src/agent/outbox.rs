//! Samples waiting for the server's acknowledgement, in a bounded queue.

use std::collections::VecDeque;

use crate::protocol::Metrics;

/// Keeps every sample until an `ack` covers it. When full, the oldest sample is dropped and
/// counted: memory stays bounded however long the server is away.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Metrics>,
    capacity: usize,
    dropped: u64,
}

/// Slots allocated up front.
const OUTBOX_INITIAL: usize = 8;

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Small at first: while connected one or two samples are in flight, and a ring
            // that moves through a large buffer ends up touching all of it (a sample is a few
            // hundred bytes inline). It doubles while the server is away.
            queue: VecDeque::with_capacity(capacity.min(OUTBOX_INITIAL)),
            capacity,
            dropped: 0,
        }
    }

    /// Adds a sample; returns true if the oldest one had to be dropped to make room.
    pub fn push(&mut self, sample: Metrics) -> bool {
        let full = self.queue.len() >= self.capacity;
        if full {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(sample);
        full
    }

    /// Forgets every sample with `seq <= acked`.
    pub fn ack(&mut self, acked: u64) {
        while self.queue.front().is_some_and(|m| m.seq <= acked) {
            self.queue.pop_front();
        }
    }

    /// The sample with this seq, if still held. Seqs in the outbox are consecutive (samples
    /// are pushed in order and only ever removed from the front), so this is an index.
    pub fn get(&self, seq: u64) -> Option<&Metrics> {
        let first = self.queue.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.queue.get(index).filter(|m| m.seq == seq)
    }

    /// Numbers the samples held 1, 2, 3… (oldest first), for a new run that carries them
    /// over; returns how many there are (the new run's highest seq).
    pub fn renumber(&mut self) -> u64 {
        let mut seq = 0;
        for m in &mut self.queue {
            seq += 1;
            m.seq = seq;
        }
        seq
    }

    /// Samples not yet acknowledged, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Metrics> {
        self.queue.iter()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Samples dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64) -> Metrics {
        Metrics {
            seq,
            ts_ms: 0,
            ..Metrics::default()
        }
    }

    #[test]
    fn ack_removes_up_to_seq() {
        let mut o = Outbox::new(10);
        (1..=5).for_each(|s| {
            o.push(m(s));
        });
        o.ack(3);
        assert_eq!(o.pending().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(o.get(4).map(|m| m.seq), Some(4));
        assert_eq!(o.get(3), None);
        assert_eq!(o.get(6), None);
        o.ack(99);
        assert!(o.is_empty());
        assert_eq!(o.get(1), None);
    }

    #[test]
    fn renumber_counts_from_one_and_keeps_lookup_by_seq() {
        let mut o = Outbox::new(10);
        (7..=9).for_each(|s| {
            o.push(m(s));
        });
        assert_eq!(o.renumber(), 3);
        assert_eq!(o.pending().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(o.get(2).map(|m| m.seq), Some(2));
        assert_eq!(Outbox::new(4).renumber(), 0);
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts() {
        let mut o = Outbox::new(3);
        let dropped: Vec<bool> = (1..=5).map(|s| o.push(m(s))).collect();
        assert_eq!(dropped, [false, false, false, true, true]);
        assert_eq!(o.pending().map(|m| m.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!((o.len(), o.dropped()), (3, 2));
    }
}
