-- 0012_value_columns: a scored list carries each customer's expected value and the campaign it implies.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add a new numbered file instead (see docs/database.md).

-- Why: a dataset whose contract has a `value:` section gets, per customer, the value model's expected spend over the
-- value horizon and the expected saved value of contacting them (jobs/value/campaign.py), ranked and selected
-- under the campaign budget. Lists of datasets without it, and lists written before 0012, leave the columns NULL.
-- Added to the partitioned parent, so every list's partition (each created LIKE churnops.scores) has them.
ALTER TABLE churnops.scores
    ADD COLUMN expected_value double precision,
    ADD COLUMN expected_saved_value double precision,
    ADD COLUMN campaign_rank integer,
    ADD COLUMN in_campaign boolean;
COMMENT ON COLUMN churnops.scores.expected_value IS
    'Expected spend over the contract''s value.horizon_days after the cutoff (the value model''s champion); '
    '0 for a customer without a purchase before the cutoff; NULL without a value section.';
COMMENT ON COLUMN churnops.scores.expected_saved_value IS
    'p(churn) x expected_value x value.save_rate - value.contact_cost; p(churn) is the score for a churn label and '
    '1 - score for a propensity label.';
COMMENT ON COLUMN churnops.scores.campaign_rank IS
    '1 for the list''s highest expected_saved_value (ties in score order).';
COMMENT ON COLUMN churnops.scores.in_campaign IS
    'Selected by the campaign: best expected_saved_value first, positive only, within value.budget.';
