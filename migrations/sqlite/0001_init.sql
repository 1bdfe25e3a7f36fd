-- Herald schema, SQLite. Kept in step with migrations/postgres/0001_init.sql:
-- same tables, columns and indexes; uuids are 16-byte blobs, times RFC 3339 text.

CREATE TABLE users (
    id          BLOB PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE campaigns (
    id                  BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL REFERENCES users (id),
    name                TEXT NOT NULL,
    message_template    TEXT NOT NULL,
    message_template_b  TEXT,
    ab_test_percentage  INTEGER CHECK (ab_test_percentage BETWEEN 0 AND 100),
    daily_limit         INTEGER NOT NULL CHECK (daily_limit BETWEEN 1 AND 1000),
    total_limit         INTEGER CHECK (total_limit >= 1),
    status              TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'completed')),
    status_reason       TEXT,
    timezone            TEXT NOT NULL,
    send_window_start   TEXT NOT NULL,
    send_window_end     TEXT NOT NULL,
    send_days           INTEGER NOT NULL CHECK (send_days BETWEEN 1 AND 127),
    carrier             TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX campaigns_by_user ON campaigns (user_id, created_at DESC, id DESC);
CREATE INDEX campaigns_by_user_status ON campaigns (user_id, status, created_at DESC, id DESC);

CREATE TABLE contacts (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES users (id),
    phone_number  TEXT NOT NULL,
    name          TEXT NOT NULL,
    attributes    TEXT NOT NULL DEFAULT '{}',
    opted_out     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (user_id, phone_number)
);

-- Links campaigns to contacts; `seq` keeps the order contacts were added in.
CREATE TABLE campaign_contacts (
    seq          INTEGER PRIMARY KEY,
    campaign_id  BLOB NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id   BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    added_at     TEXT NOT NULL,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX campaign_contacts_by_campaign ON campaign_contacts (campaign_id, seq);

-- Every opt-out and opt-in, with where it came from, for consent audits.
CREATE TABLE consent_events (
    id          BLOB PRIMARY KEY,
    contact_id  BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    opted_out   BOOLEAN NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('api', 'keyword', 'import')),
    detail      TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX consent_events_by_contact ON consent_events (contact_id, created_at);

-- One row per POST /campaigns/{id}/send.
CREATE TABLE send_tasks (
    id             BLOB PRIMARY KEY,
    campaign_id    BLOB NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    queued         INTEGER NOT NULL,
    scheduled_for  TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX send_tasks_by_campaign ON send_tasks (campaign_id);

-- The outbox: a message row is committed before its job is published.
CREATE TABLE messages (
    id                  BLOB PRIMARY KEY,
    campaign_id         BLOB NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id          BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    task_id             BLOB REFERENCES send_tasks (id) ON DELETE SET NULL,
    variant             TEXT NOT NULL CHECK (variant IN ('a', 'b')),
    status              TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed')),
    carrier             TEXT NOT NULL,
    carrier_message_id  TEXT,
    segments            INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    not_before          TEXT NOT NULL,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    sent_at             TEXT,
    delivered_at        TEXT,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX messages_by_campaign_status ON messages (campaign_id, status, variant);
CREATE INDEX messages_by_task ON messages (task_id, status);
CREATE INDEX messages_due ON messages (not_before) WHERE status = 'queued';
CREATE INDEX messages_by_carrier_id ON messages (carrier, carrier_message_id);
CREATE INDEX messages_by_contact ON messages (contact_id);
