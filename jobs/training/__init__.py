"""Training: one dataset's snapshot in, a registered model and a promotion decision out.

`train` (the job) and `TrainingResult` are what the CLI, the DAGs, the benchmarks and the tests call; each module
beside it holds one step (docs/model-selection.md maps them).
"""

from churnops.jobs.training.gate import PromotionDecision
from churnops.jobs.training.job import TrainingResult, train

__all__ = ["PromotionDecision", "TrainingResult", "train"]
