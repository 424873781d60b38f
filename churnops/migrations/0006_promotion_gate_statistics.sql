-- 0006_promotion_gate_statistics: every number the promotion gate decided on, beside the decision.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0007_<change>.sql instead (see docs/database.md).

-- Why: the gate compares challenger and champion on the same rows with DeLong's paired test and checks that Brier
-- score and log loss are not worse; a row that kept only the two AUCs and the margin could not say why a model
-- that beat the champion was refused. Nullable: rows decided before this migration, and decisions without a
-- champion to compare with, have no comparison.
ALTER TABLE churnops.promotion_decisions
    ADD COLUMN rule                          text,
    ADD COLUMN evaluation_rows               integer,
    ADD COLUMN challenger_brier              double precision,
    ADD COLUMN champion_brier                double precision,
    ADD COLUMN challenger_log_loss           double precision,
    ADD COLUMN champion_log_loss             double precision,
    ADD COLUMN auc_difference                double precision,
    ADD COLUMN auc_difference_standard_error double precision,
    ADD COLUMN auc_difference_ci_low         double precision,
    ADD COLUMN auc_difference_ci_high        double precision,
    ADD COLUMN p_value                       double precision,
    ADD COLUMN significance_level            double precision,
    ADD COLUMN min_auc                       double precision,
    ADD COLUMN brier_tolerance               double precision,
    ADD COLUMN log_loss_tolerance            double precision,
    ADD COLUMN champion_error                text;

COMMENT ON COLUMN churnops.promotion_decisions.rule IS
    'The gate rule that decided: leakage, auc_floor, champion_unavailable, no_champion, auc_margin, '
    'auc_significance, brier_non_inferiority, log_loss_non_inferiority or beats_champion (promoted).';
COMMENT ON COLUMN churnops.promotion_decisions.auc_difference IS
    'Challenger minus champion ROC AUC on the same evaluation rows (challenger_value - champion_value).';
COMMENT ON COLUMN churnops.promotion_decisions.auc_difference_ci_low IS
    'Lower bound of the (1 - significance_level) confidence interval of auc_difference (DeLong).';
COMMENT ON COLUMN churnops.promotion_decisions.auc_difference_ci_high IS
    'Upper bound of the (1 - significance_level) confidence interval of auc_difference (DeLong).';
COMMENT ON COLUMN churnops.promotion_decisions.p_value IS
    'Two-sided p-value of DeLong''s test that the two ROC AUCs are equal.';
COMMENT ON COLUMN churnops.promotion_decisions.champion_error IS
    'Why an existing champion could not be loaded or scored (the gate then refused and the training failed).';
