-- Durable edges (issue 9). Kept in step with migrations/sqlite/0004_outbox.sql.

-- Optimistic concurrency: every write of a campaign or contact moves its
-- version on, and a read-modify-write lands only on the version it read
-- (`updated_at` can repeat within one clock tick, or on a test's manual clock).
ALTER TABLE campaigns ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Events of the api role waiting for the bus to confirm them (SPEC §9: at least
-- once, also through a bus outage). A relay publishes them in `seq` order and
-- deletes each row once JetStream has acknowledged it.
CREATE TABLE event_outbox (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id       UUID NOT NULL,
    owner    UUID,
    entity   TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    time     TIMESTAMPTZ NOT NULL,
    data     TEXT NOT NULL
);
