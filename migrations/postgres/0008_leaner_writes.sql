-- Fewer index entries per row on the paths that write a million rows
-- (docs/benchmarks.md, "Closing the scale gaps"). Kept in step with
-- migrations/sqlite/0008_leaner_writes.sql where the schemas differ.

-- A link's key is its place in the campaign: `seq` (an identity, and a
-- primary key index of its own) was only read by the purge, which now walks
-- (campaign_id, position). One index and one sequence call less per link.
ALTER TABLE campaign_contacts DROP CONSTRAINT campaign_contacts_pkey;
ALTER TABLE campaign_contacts DROP COLUMN seq;
ALTER TABLE campaign_contacts ADD CONSTRAINT campaign_contacts_by_position
    PRIMARY KEY USING INDEX campaign_contacts_by_position;

-- A message has no carrier id until it is sent, and only a queued message is
-- looked up by its contact (an opt-out cancels those). Every status change
-- rewrites a message's index entries (the status is in partial indexes'
-- predicates, so no update is HOT): partial indexes skip the entries no query
-- reads, at queueing and at every hand-off.
DROP INDEX messages_by_carrier_id;
CREATE INDEX messages_by_carrier_id ON messages (carrier, carrier_message_id) WHERE carrier_message_id IS NOT NULL;
DROP INDEX messages_by_contact;
CREATE INDEX messages_queued_by_contact ON messages (contact_id) WHERE status = 'queued';
