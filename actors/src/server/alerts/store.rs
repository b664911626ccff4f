//! Where alert states outlive the server: a firing alert is still firing after a restart, and
//! is not notified again.
//!
//! A small trait, [`AlertStore`], with two implementations: [`SqliteAlertStore`], a table
//! `alert_state` of its own in the server's database (`<data-dir>/lanmon.db`, its own
//! connection; created if missing), and [`MemoryAlertStore`] for `--no-store` (a restart
//! forgets, as it forgets the history). The engine calls it on its own thread, only when an
//! alert changed, one transaction per evaluation.
//!
//! ```text
//! alert_state(id TEXT PRIMARY KEY, agent TEXT, rule TEXT, phase TEXT, state TEXT (JSON of
//!             state::Alert), updated_ms INTEGER)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::server::alerts::state::Alert;
use crate::util::now_ms;

/// Why the alert store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("alert store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("alert store: {0}")]
    Json(#[from] serde_json::Error),
}

/// Keeps alert states across restarts.
pub trait AlertStore: Send {
    /// Every saved alert (pending, firing, and recently resolved).
    fn load(&mut self) -> Result<Vec<Alert>, StoreError>;
    /// Removes `delete` (store keys), then writes `upsert` (under [`Alert::store_key`]), in
    /// one go.
    fn save(&mut self, upsert: &[&Alert], delete: &[String]) -> Result<(), StoreError>;
}

/// How long a write waits for the history's writer to let go of the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`AlertStore`] in the server's SQLite database.
pub struct SqliteAlertStore {
    conn: Connection,
}

impl SqliteAlertStore {
    /// Opens (creating the table if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS alert_state (
                 id TEXT PRIMARY KEY,
                 agent TEXT NOT NULL,
                 rule TEXT NOT NULL,
                 phase TEXT NOT NULL,
                 state TEXT NOT NULL,
                 updated_ms INTEGER NOT NULL
             );",
        )?;
        Ok(Self { conn })
    }
}

impl AlertStore for SqliteAlertStore {
    fn load(&mut self) -> Result<Vec<Alert>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, state FROM alert_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            match serde_json::from_str::<Alert>(&json) {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!("alert store: skipping unreadable alert {id}: {e}"),
            }
        }
        Ok(out)
    }

    fn save(&mut self, upsert: &[&Alert], delete: &[String]) -> Result<(), StoreError> {
        if upsert.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM alert_state WHERE id = ?1")?;
            for id in delete {
                del.execute(params![id])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO alert_state (id, agent, rule, phase, state, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET agent = ?2, rule = ?3, phase = ?4, state = ?5,
                                               updated_ms = ?6",
            )?;
            let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
            for a in upsert {
                let json = serde_json::to_string(a)?;
                put.execute(params![
                    a.store_key(),
                    a.agent,
                    a.rule.name(),
                    a.machine.phase.as_str(),
                    json,
                    now
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// [`AlertStore`] in memory (`--no-store`): the same behaviour within one run.
#[derive(Default)]
pub struct MemoryAlertStore {
    rows: HashMap<String, Alert>,
}

impl AlertStore for MemoryAlertStore {
    fn load(&mut self) -> Result<Vec<Alert>, StoreError> {
        Ok(self.rows.values().cloned().collect())
    }

    fn save(&mut self, upsert: &[&Alert], delete: &[String]) -> Result<(), StoreError> {
        for id in delete {
            self.rows.remove(id);
        }
        for a in upsert {
            self.rows.insert(a.store_key(), (*a).clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::alerts::rules::{RuleId, Severity};
    use crate::server::alerts::state::{Machine, Phase};

    fn alert(id: &str, phase: Phase) -> Alert {
        Alert {
            id: id.into(),
            agent: "a1".into(),
            name: "web-1".into(),
            hostname: "web-1".into(),
            ip: "127.0.0.1".into(),
            rule: RuleId::Offline,
            subject: None,
            severity: Severity::Critical,
            machine: Machine {
                phase,
                started_ms: Some(1),
                fired_ms: Some(2),
                ..Machine::new()
            },
            value: None,
            threshold: 0.0,
            summary: "agent offline".into(),
            silenced: false,
            notified: true,
            delivered: true,
        }
    }

    fn roundtrip(store: &mut dyn AlertStore, reopen: &mut dyn FnMut() -> Box<dyn AlertStore>) {
        let (a, b) = (alert("a", Phase::Firing), alert("b", Phase::Pending));
        let Ok(()) = store.save(&[&a, &b], &[]) else {
            panic!("save failed");
        };
        let mut changed = a.clone();
        changed.machine.phase = Phase::Resolved;
        let Ok(()) = store.save(&[&changed], &["b".to_string()]) else {
            panic!("save failed");
        };
        let mut back = reopen();
        let Ok(loaded) = back.load() else {
            panic!("load failed");
        };
        assert_eq!(loaded, vec![changed]);
    }

    /// Proves: what the SQLite store saves (insert, update, delete) is what a new connection
    /// to the same database loads, and the table lives beside other tables of the file.
    #[test]
    fn sqlite_store_round_trip() {
        let dir =
            std::env::temp_dir().join(format!("lanmon-alert-store-{}", crate::util::random_id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("lanmon.db");
        if let Ok(conn) = Connection::open(&path) {
            let _ = conn.execute_batch("CREATE TABLE other(x); INSERT INTO other VALUES (1);");
        }
        let Ok(mut store) = SqliteAlertStore::open(&path) else {
            panic!("open failed");
        };
        let p = path.clone();
        roundtrip(&mut store, &mut || match SqliteAlertStore::open(&p) {
            Ok(s) => Box::new(s),
            Err(e) => panic!("reopen: {e}"),
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Proves: the in-memory store behaves like the SQLite one within a run.
    #[test]
    fn memory_store_round_trip() {
        let mut store = MemoryAlertStore::default();
        let (a, b) = (alert("a", Phase::Firing), alert("b", Phase::Pending));
        assert!(store.save(&[&a, &b], &[]).is_ok());
        let mut changed = a.clone();
        changed.machine.phase = Phase::Resolved;
        assert!(store.save(&[&changed], &["b".to_string()]).is_ok());
        assert!(store.load().is_ok_and(|l| l == vec![changed]));
    }
}
