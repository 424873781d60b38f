-- 0005_ingestion_per_source_file: ingestion reports are kept per source file version, with the event days it held.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0006_<change>.sql instead (see docs/database.md).

-- Why: events arrive as many files in a landing folder (jobs/ingest.py), each ingested once. A row is one file
-- version: `source` is its path relative to the landing root, `run_id` the prefix of its SHA-256, so recording the
-- same file again changes nothing and a re-delivery adds a row beside the version it replaced. The event days say
-- which part of the timeline a file brought (null when every row was quarantined).
ALTER TABLE churnops.ingestion_reports
    ADD COLUMN first_event_day date,
    ADD COLUMN last_event_day  date,
    ADD CONSTRAINT ingestion_reports_event_days_ordered
        CHECK (first_event_day IS NULL OR last_event_day >= first_event_day);
COMMENT ON TABLE churnops.ingestion_reports IS
    'Validated ingestion per source file version (source = path relative to the landing root, run_id = SHA-256 '
    'prefix): rows read, accepted into bronze, quarantined (with counts per reason), and the first and last event '
    'day accepted. rows_read = rows_accepted + rows_quarantined is enforced.';
