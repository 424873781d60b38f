"""Time-to-next-purchase (survival) models: the survival frame, discrete-time hazards, the boosted model, the
classical baselines and the metrics. See docs/survival-model.md."""
