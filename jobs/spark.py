"""One place that builds SparkSessions; one session per task, never one per cutoff."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from churnops.config import Settings


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """Get or create a SparkSession. Under `spark-submit` the master comes from the submit command."""
    # Executors must run the same Python (and so see the same installed churnops) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.ui.showConsoleProgress", "false")
    )
    if "spark.master" not in SparkSession.builder._options and not os.environ.get("SPARK_SUBMITTED"):
        builder = builder.master(settings.spark.master).config(
            "spark.driver.memory", settings.spark.driver_memory
        )
    return builder.getOrCreate()
