-- 0002_online_features: the online feature table the API reads when a request names only a customer_id.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0003_<change>.sql instead (see docs/database.md).

-- ---------------------------------------------------------------------------------------------------------------
-- Online features: the latest feature row of every customer, one complete set per dataset, replaced as a whole.
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.online_feature_sets (
    dataset         text        PRIMARY KEY,
    cutoff          date        NOT NULL,
    row_count       bigint      NOT NULL CHECK (row_count >= 0),
    feature_columns jsonb       NOT NULL,
    snapshot_hash   text,
    published_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE churnops.online_feature_sets IS
    'One row per dataset: which cutoff (and feature snapshot) the rows of churnops.online_features come from, '
    'how many customers, which feature columns. Written in the same transaction as those rows '
    '(churnops.online_store.publish_online_features).';

CREATE TABLE churnops.online_features (
    dataset      text        NOT NULL,
    customer_id  text        NOT NULL,
    cutoff       date        NOT NULL,
    -- Feature name -> value (number, string or null for missing); the model's schema validates it at read time.
    features     jsonb       NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    -- The primary key is the API's look-up path: one index probe per /predict by customer_id.
    PRIMARY KEY (dataset, customer_id)
);
COMMENT ON TABLE churnops.online_features IS
    'The latest point-in-time features of every customer of a dataset, for online scoring by customer_id. '
    'Published by the feature DAG: the whole set of a dataset is replaced in one transaction (DELETE + COPY), '
    'so the API sees either the previous complete set or the new one.';
