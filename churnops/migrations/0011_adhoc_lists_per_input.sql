-- 0011_adhoc_lists_per_input: an `adhoc` list is one per input file, not one per (dataset, date).
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0012_<change>.sql instead (see docs/database.md).

-- Why: two different files scored with `churnops score --input` on the same day for the same dataset replaced each
-- other's list. Each list now also has a name: '' for the scheduled kinds (one `regular` and one `backfill` list per
-- date, as before), and for an `adhoc` list the identity of its input (its file name and content hash), so that
-- re-scoring the same file replaces its own list and another file gets a list of its own. The name is part of the
-- list's partition key in churnops.scores ('<dataset>/<logical_date>/adhoc/<list_name>').
ALTER TABLE churnops.score_runs ADD COLUMN list_name text NOT NULL DEFAULT '';
ALTER TABLE churnops.score_runs
    ADD CONSTRAINT score_runs_list_name_check CHECK (list_kind = 'adhoc' OR list_name = '');
ALTER TABLE churnops.score_runs DROP CONSTRAINT score_runs_pkey;
ALTER TABLE churnops.score_runs ADD PRIMARY KEY (dataset, logical_date, list_kind, list_name);
COMMENT ON COLUMN churnops.score_runs.list_name IS
    'Which list of its (dataset, logical_date, list_kind): '''' for `regular` and `backfill`; for `adhoc`, the '
    'input file''s identity, <file name>@<first 16 hex digits of its SHA-256> (empty for ad-hoc lists written '
    'before 0011). A list is replaced only by a list of the same name.';
