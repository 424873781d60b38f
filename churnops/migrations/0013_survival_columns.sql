-- 0013_survival_columns: a scoring list carries the survival model's outputs beside the churn score.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0014_<change>.sql instead (see docs/database.md).

-- Why: a dataset whose contract has a `survival:` section gets, per customer, P(buy by t days) for its configured
-- horizons and the median days to the next purchase from the survival champion (jobs/survival/scoring.py). One
-- column per horizon the contract accepts (churnops.survival_columns.SURVIVAL_HORIZONS_DAYS); every column is NULL
-- on lists of datasets without the section and on lists written before this migration. Added to the partitioned
-- parent, so every existing partition gets them too (nullable, no default: no table rewrite).
ALTER TABLE churnops.scores
    ADD COLUMN p_buy_30d double precision CHECK (p_buy_30d BETWEEN 0 AND 1),
    ADD COLUMN p_buy_60d double precision CHECK (p_buy_60d BETWEEN 0 AND 1),
    ADD COLUMN p_buy_90d double precision CHECK (p_buy_90d BETWEEN 0 AND 1),
    ADD COLUMN p_buy_180d double precision CHECK (p_buy_180d BETWEEN 0 AND 1),
    ADD COLUMN p_buy_365d double precision CHECK (p_buy_365d BETWEEN 0 AND 1),
    ADD COLUMN median_days_to_next_purchase double precision CHECK (median_days_to_next_purchase > 0),
    ADD COLUMN median_beyond_horizon boolean,
    ADD CONSTRAINT scores_median_flag_check
        CHECK (median_days_to_next_purchase IS NULL OR median_beyond_horizon IS NOT TRUE);
COMMENT ON COLUMN churnops.scores.p_buy_90d IS
    'Survival model: P(at least one purchase, or activity, within 90 days of the cutoff); NULL without a survival '
    'model. p_buy_30d, _60d, _180d and _365d likewise.';
COMMENT ON COLUMN churnops.scores.median_days_to_next_purchase IS
    'Survival model: days from the cutoff at which P(no purchase yet) falls to 1/2; NULL when beyond the longest '
    'follow-up the model learned from (median_beyond_horizon true) or without a survival model.';
COMMENT ON COLUMN churnops.scores.median_beyond_horizon IS
    'True when the median days to the next purchase lies past the survival model''s horizon; NULL without one.';
