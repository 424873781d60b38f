-- 0007_adhoc_score_lists: a third kind of scoring list, `adhoc`, for a new file scored on request.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0008_<change>.sql instead (see docs/database.md).

-- Why: `churnops score --input FILE` scores customers that are not in the dataset's snapshot (a file of new
-- customers, a partner's export). Its list must never replace the list a scheduled run wrote for the same date,
-- and realized performance and the campaign export, which judge and send the scheduled lists, must not read it.
ALTER TABLE churnops.score_runs
    DROP CONSTRAINT score_runs_list_kind_check,
    ADD CONSTRAINT score_runs_list_kind_check CHECK (list_kind IN ('regular', 'backfill', 'adhoc'));
ALTER TABLE churnops.scores
    DROP CONSTRAINT scores_list_kind_check,
    ADD CONSTRAINT scores_list_kind_check CHECK (list_kind IN ('regular', 'backfill', 'adhoc'));
COMMENT ON COLUMN churnops.score_runs.list_kind IS
    '`regular`: the list a run wrote for its own date; `backfill`: a list written later for a past date or '
    'cutoff (an Airflow backfill, a backtest); `adhoc`: a new file scored with `churnops score --input` (its '
    'run_id names the file). Each kind of a date is replaced only by the same kind.';
