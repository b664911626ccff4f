//! One transaction of the Store, planned and then run: a [`Commit`] logs the batch, moves the
//! agents whose samples are due, trims `raw_log`, and only once it has committed changes the
//! store's backlog. Nothing of a failed commit is kept but the batch, which is retried whole.

use std::collections::HashSet;
use std::time::Instant;

use rusqlite::Connection;

use super::DurableSeq;
use super::error::Result;
use super::keys::Keys;
use super::log::{self, Op};
use super::rollup::Backlog;

/// Which logged samples a commit moves into `raw` and the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moves {
    /// Those that are due: of the agents whose samples have waited
    /// [`ROLLUP_DELAY`](super::ROLLUP_DELAY) (oldest first, within
    /// [`MOVE_BUDGET`](super::MOVE_BUDGET)), and of those the batch takes to
    /// [`MOVE_ROWS`](super::MOVE_ROWS).
    Due,
    /// All of them (at shutdown): `raw_log` is left empty.
    All,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Commit<'a> {
    /// The queued writes, in order.
    ops: &'a [Op],
    moves: Moves,
    /// The agents whose pending samples move, as far as known before the batch is logged
    /// (the batch may add more).
    moving: HashSet<i64>,
    now: Instant,
}

impl<'a> Commit<'a> {
    /// Plans writing `ops`, and moving what `moves` says of `backlog`, at `now`.
    pub(super) fn plan(ops: &'a [Op], backlog: &Backlog, moves: Moves, now: Instant) -> Self {
        let moving = match moves {
            Moves::All => backlog.agents(),
            Moves::Due => backlog.due_within_budget(now),
        };
        Commit {
            ops,
            moves,
            moving,
            now,
        }
    }

    /// Runs the plan in one transaction; returns, per agent run written, the highest seq now
    /// durable. `keys` may name rows of a rolled-back transaction after an error (reload
    /// them); `backlog` changes only once the transaction has committed.
    pub(super) fn run(
        mut self,
        conn: &mut Connection,
        keys: &mut Keys,
        backlog: &mut Backlog,
    ) -> Result<Vec<DurableSeq>> {
        let tx = conn.transaction()?;
        let mut logged = log::write(&tx, keys, self.ops, self.now)?;
        match self.moves {
            Moves::All => self.moving.extend(logged.added.keys().copied()),
            Moves::Due => self.moving.extend(backlog.full(&logged.added)),
        }
        for &agent in &self.moving {
            backlog.move_agent(&tx, agent, logged.added.remove(&agent))?;
        }
        log::trim(&tx, backlog.keep_from(&self.moving, &logged.added))?;
        tx.commit()?;
        backlog.settle(&self.moving, logged.added);
        Ok(logged.durable)
    }
}
