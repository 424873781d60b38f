-- 0009_realized_outcomes: what happened to each customer of a list once its horizon passed.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0010_<change>.sql instead (see docs/database.md).

-- Why: realized_performance judges a whole list (ROC AUC, observed rate); the people who act on the lists ask
-- about one customer ("we called her in March: did she leave?"). The monitoring job already derives every listed
-- customer's outcome from the bronze events to compute the list's figures; this keeps them, one row per customer
-- and evaluated list, written with the list's realized_performance row (replacing an evaluation replaces both).
CREATE TABLE churnops.realized_outcomes (
    dataset       text    NOT NULL,
    customer_id   text    NOT NULL,
    logical_date  date    NOT NULL,
    list_kind     text    NOT NULL CHECK (list_kind IN ('regular', 'backfill')),
    model_version text    NOT NULL,
    -- The label rule's answer for the list's horizon: churn lists true = left (no event), propensity lists
    -- true = bought (at least one event), as the training labels.
    outcome       boolean NOT NULL,
    -- Leading with the customer: the customer page reads one customer's outcomes with one index probe.
    PRIMARY KEY (dataset, customer_id, logical_date, list_kind, model_version)
);
COMMENT ON TABLE churnops.realized_outcomes IS
    'Per customer of an evaluated scoring list: the realized outcome under the dataset''s label rule once the '
    'list''s horizon passed (written by monitoring with the list''s realized_performance row).';
