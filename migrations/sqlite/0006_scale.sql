-- no-transaction
-- Scale (issue 10): reads at constant cost, sends and deletes in the
-- background. Kept in step with migrations/postgres/0006_scale.sql.
--
-- SQLite cannot alter a CHECK constraint, so `campaigns` is rebuilt, and
-- other tables reference it: foreign keys must be off while its old copy is
-- dropped (dropping it with them on would cascade to every child row), which
-- SQLite only allows outside a transaction. Hence no-transaction, and an
-- explicit one inside (SQLite's documented procedure for such changes).
PRAGMA foreign_keys = OFF;
BEGIN;

-- daily_limit's upper bound is the operator's `campaigns.max_daily_limit`,
-- which the domain checks; the database keeps the lower bound.
-- `deleted_at` is set when DELETE answers: the campaign is gone for every
-- read at once, and the purge removes its rows in the background, in bounded batches.
CREATE TABLE campaigns_rebuilt (
    id                  BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL REFERENCES users (id),
    name                TEXT NOT NULL,
    message_template    TEXT NOT NULL,
    message_template_b  TEXT,
    ab_test_percentage  INTEGER CHECK (ab_test_percentage BETWEEN 0 AND 100),
    daily_limit         INTEGER NOT NULL CHECK (daily_limit >= 1),
    total_limit         INTEGER CHECK (total_limit >= 1),
    status              TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'completed')),
    status_reason       TEXT,
    timezone            TEXT NOT NULL,
    send_window_start   TEXT NOT NULL,
    send_window_end     TEXT NOT NULL,
    send_days           INTEGER NOT NULL CHECK (send_days BETWEEN 1 AND 127),
    carrier             TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    version             INTEGER NOT NULL DEFAULT 0,
    deleted_at          TEXT
);
INSERT INTO campaigns_rebuilt (id, user_id, name, message_template, message_template_b, ab_test_percentage,
        daily_limit, total_limit, status, status_reason, timezone, send_window_start, send_window_end,
        send_days, carrier, created_at, updated_at, version)
    SELECT id, user_id, name, message_template, message_template_b, ab_test_percentage,
        daily_limit, total_limit, status, status_reason, timezone, send_window_start, send_window_end,
        send_days, carrier, created_at, updated_at, version FROM campaigns;
DROP TABLE campaigns;
ALTER TABLE campaigns_rebuilt RENAME TO campaigns;
CREATE INDEX campaigns_by_user ON campaigns (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_by_user_status ON campaigns (user_id, status, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_active ON campaigns (id) WHERE status = 'active';
CREATE INDEX campaigns_deleted ON campaigns (deleted_at) WHERE deleted_at IS NOT NULL;

-- A link's place in its campaign, 1, 2, 3… with no gaps (links are only
-- removed with their campaign): page N of the contacts is a range of it, and
-- the campaign's contact count is its maximum.
ALTER TABLE campaign_contacts ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
UPDATE campaign_contacts SET position = r.n
    FROM (SELECT seq, row_number() OVER (PARTITION BY campaign_id ORDER BY seq) AS n FROM campaign_contacts) AS r
    WHERE campaign_contacts.seq = r.seq;
CREATE UNIQUE INDEX campaign_contacts_by_position ON campaign_contacts (campaign_id, position);
DROP INDEX campaign_contacts_by_campaign;

-- The number of contacts linked to each campaign, written by the bulk link
-- in its own transaction: the contact count is one key lookup, and the next
-- position to hand out. (MAX(position) reads the index's last entry, but right
-- after a 1,000,000-row import that read waited on heap pages for up to
-- 0.7 s: docs/benchmarks.md, "At scale".)
CREATE TABLE campaign_sizes (
    campaign_id  BLOB PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    contacts     BIGINT NOT NULL
);
INSERT INTO campaign_sizes (campaign_id, contacts)
    SELECT campaign_id, COUNT(*) FROM campaign_contacts GROUP BY campaign_id;

-- A send queues in the background: what it needs to go on after a restart,
-- and how far through the campaign's contacts (by position) it has got.
ALTER TABLE send_tasks ADD COLUMN queuing BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE send_tasks ADD COLUMN queued_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE send_tasks ADD COLUMN carrier TEXT NOT NULL DEFAULT '';
ALTER TABLE send_tasks ADD COLUMN not_before TEXT;
ALTER TABLE send_tasks ADD COLUMN b_percentage INTEGER;
CREATE INDEX send_tasks_queuing ON send_tasks (created_at) WHERE queuing;

-- Until when the scheduler leaves a campaign alone (its window is closed, or
-- its day's limit is spent): one row per campaign, where re-stamping every
-- queued message would update a million rows under the write lock.
CREATE TABLE campaign_waits (
    campaign_id  BLOB PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    until        TEXT NOT NULL
);

-- Status-keyed indexes that nothing reads any more (stats and tasks read
-- message_counts): every status change had to rewrite their entries, and the
-- planner could pick them for the claim, sorting a million queued rows.
DROP INDEX messages_by_campaign_status;
DROP INDEX messages_by_task;
-- The foreign key from messages.task_id (ON DELETE SET NULL) still needs one
-- to find a deleted task's messages (PostgreSQL has no such key, see its 0006).
CREATE INDEX messages_by_task ON messages (task_id);

-- Messages counted by campaign, task, variant and status, kept by the
-- triggers below in the same transaction as every change of a message, so
-- stats, tasks and /metrics read a few rows instead of counting messages.
-- No foreign key: the purge of a deleted campaign removes its rows last.
-- `task_id` is the nil uuid for a message without a task.
CREATE TABLE message_counts (
    campaign_id  BLOB NOT NULL,
    task_id      BLOB NOT NULL,
    variant      TEXT NOT NULL,
    status       TEXT NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, task_id, variant, status)
);

-- SQLite has row triggers only: one counter upsert per changed row.
CREATE TRIGGER messages_counted_on_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.task_id, zeroblob(16)), NEW.variant, NEW.status, 1)
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER messages_counted_on_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    VALUES (OLD.campaign_id, COALESCE(OLD.task_id, zeroblob(16)), OLD.variant, OLD.status, -1)
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = n - 1;
END;
CREATE TRIGGER messages_counted_on_update AFTER UPDATE OF campaign_id, task_id, variant, status ON messages
WHEN OLD.campaign_id IS NOT NEW.campaign_id OR OLD.task_id IS NOT NEW.task_id
    OR OLD.variant IS NOT NEW.variant OR OLD.status IS NOT NEW.status BEGIN
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    VALUES (OLD.campaign_id, COALESCE(OLD.task_id, zeroblob(16)), OLD.variant, OLD.status, -1)
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = n - 1;
    INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    VALUES (NEW.campaign_id, COALESCE(NEW.task_id, zeroblob(16)), NEW.variant, NEW.status, 1)
    ON CONFLICT (campaign_id, task_id, variant, status) DO UPDATE SET n = n + 1;
END;

-- The messages there already.
INSERT INTO message_counts (campaign_id, task_id, variant, status, n)
    SELECT campaign_id, COALESCE(task_id, zeroblob(16)), variant, status, COUNT(*) FROM messages
    GROUP BY 1, 2, 3, 4;

COMMIT;
PRAGMA foreign_keys = ON;
