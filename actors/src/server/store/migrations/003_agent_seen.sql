-- Schema 3: when each agent last connected (ms since the Unix epoch, 0 before this schema), so
-- that the retention pass can delete agents that have been away longer than offline agents
-- are remembered and have no rows left in any tier. `meta` stays at '2': this adds a column
-- with a default, which lanmon before `user_version` does not notice.
ALTER TABLE agents ADD COLUMN seen_ms INTEGER NOT NULL DEFAULT 0;
