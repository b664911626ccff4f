//! Typed questions about a [`Snapshot`], asked by both test layers, and [`ToJson`] for failure
//! messages that show the whole snapshot (or agent entry) as the server printed it.

use std::collections::BTreeMap;

use lanmon::snapshot::{AgentView, Snapshot, Status};
use serde::Serialize;

/// What the tests ask of a snapshot, by agent name. The `bool` and counter helpers are meant
/// for wait predicates and never panic (an agent not listed yet is neither live nor advanced);
/// [`SnapshotExt::agent`] is for assertions and panics with the snapshot.
pub trait SnapshotExt {
    /// The entry of the agent named `name`, if it is listed.
    fn find(&self, name: &str) -> Option<&AgentView>;

    /// The entry of the agent named `name`; panics with the whole snapshot if it is missing.
    #[track_caller]
    fn agent(&self, name: &str) -> &AgentView;

    /// The agent's status, if it is listed.
    fn status(&self, name: &str) -> Option<Status>;

    /// Whether the agent is listed as `live`.
    fn is_live(&self, name: &str) -> bool {
        self.status(name) == Some(Status::Live)
    }

    /// The agent's latest `seq` (0 if it is not listed).
    fn seq(&self, name: &str) -> u64 {
        self.find(name).map_or(0, |a| a.seq)
    }

    /// The names of every agent, in snapshot order.
    fn names(&self) -> Vec<&str>;

    /// The seq of every named agent.
    fn seqs(&self, names: &[&str]) -> BTreeMap<String, u64> {
        names
            .iter()
            .map(|n| ((*n).to_string(), self.seq(n)))
            .collect()
    }

    /// Whether every named agent is live.
    fn all_live(&self, names: &[&str]) -> bool {
        names.iter().all(|n| self.is_live(n))
    }

    /// Whether every named agent is offline.
    fn all_offline(&self, names: &[&str]) -> bool {
        names
            .iter()
            .all(|n| self.status(n) == Some(Status::Offline))
    }

    /// Whether every agent in `base` is live with a seq at least `by` above the one recorded
    /// there (`by` = 1: it sent something since).
    fn all_live_and_advanced_by(&self, base: &BTreeMap<String, u64>, by: u64) -> bool {
        base.iter()
            .all(|(name, &s)| self.is_live(name) && self.seq(name) >= s + by)
    }
}

impl SnapshotExt for Snapshot {
    fn find(&self, name: &str) -> Option<&AgentView> {
        self.agents.iter().find(|a| a.name == name)
    }

    #[track_caller]
    fn agent(&self, name: &str) -> &AgentView {
        self.find(name)
            .unwrap_or_else(|| panic!("agent {name} is not listed: {}", self.to_json()))
    }

    fn status(&self, name: &str) -> Option<Status> {
        self.find(name).map(|a| a.status)
    }

    fn names(&self) -> Vec<&str> {
        self.agents.iter().map(|a| a.name.as_str()).collect()
    }
}

/// A value as compact JSON, for failure messages: `assert!(…, "{}", snap.to_json())`.
pub trait ToJson {
    fn to_json(&self) -> String;
}

impl<T: Serialize> ToJson for T {
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("(not serializable: {e})"))
    }
}
