//! Which settings apply to an agent: the `[[override]]`s whose patterns match its name or
//! id (in file order, later wins), the `[[silence]]` covering a rule now; shell-style globs.

use crate::server::alerts::rules::{RuleId, RuleSpec};

use super::{AlertsConfig, RulePatch};

/// Settings for the agents whose name or id matches one of `agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub agents: Vec<String>,
    pub rules: Vec<(RuleId, RulePatch)>,
}

/// No notifications for these agents and rules (empty: all) until `until_ms` (if set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub agents: Vec<String>,
    pub rules: Vec<RuleId>,
    pub until_ms: Option<u64>,
    pub comment: Option<String>,
}

/// Whether `text` matches the shell-style `pattern`: `*` any run of characters, `?` one
/// character, anything else itself (case-sensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is trying to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether an agent (by `id` and `name`) matches one of `patterns` (empty: every agent).
fn matches_agent(patterns: &[String], id: &str, name: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| p == id || glob_match(p, name) || glob_match(p, id))
}

impl AlertsConfig {
    /// Indexes of the overrides that apply to the agent `id` named `name`.
    pub fn overrides_for(&self, id: &str, name: &str) -> Vec<usize> {
        self.overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| matches_agent(&o.agents, id, name))
            .map(|(i, _)| i)
            .collect()
    }

    /// `rule`'s settings for an agent matched by `overrides` (from [`Self::overrides_for`]).
    pub fn spec(&self, rule: RuleId, overrides: &[usize]) -> RuleSpec {
        let mut spec = self
            .rules
            .get(&rule)
            .copied()
            .unwrap_or(rule.default_spec());
        for &i in overrides {
            if let Some(o) = self.overrides.get(i) {
                for (r, patch) in &o.rules {
                    if *r == rule {
                        patch.apply(rule, &mut spec);
                    }
                }
            }
        }
        spec
    }

    /// The silence covering `rule` for this agent at `now_ms`, if any.
    pub fn silence(&self, id: &str, name: &str, rule: RuleId, now_ms: u64) -> Option<&Silence> {
        self.silences.iter().find(|s| {
            s.until_ms.is_none_or(|u| now_ms < u)
                && (s.rules.is_empty() || s.rules.contains(&rule))
                && matches_agent(&s.agents, id, name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: the glob matcher's `*` and `?`, anchored at both ends.
    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("web-*", "web-"));
        assert!(!glob_match("web-*", "db-web-1"));
        assert!(glob_match("*-1", "db-web-1"));
        assert!(glob_match("w?b*1", "web-12341"));
        assert!(!glob_match("w?b", "wb"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }
}
