-- Fewer index entries per row on the paths that write a million rows
-- (docs/benchmarks.md, "Closing the scale gaps"). PostgreSQL also drops
-- campaign_contacts.seq; here it is the rowid, which costs no index.

-- A message has no carrier id until it is sent, and only a queued message is
-- looked up by its contact (an opt-out cancels those): partial indexes skip
-- the entries no query reads.
DROP INDEX messages_by_carrier_id;
CREATE INDEX messages_by_carrier_id ON messages (carrier, carrier_message_id) WHERE carrier_message_id IS NOT NULL;
DROP INDEX messages_by_contact;
CREATE INDEX messages_queued_by_contact ON messages (contact_id) WHERE status = 'queued';
