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
    if settings.spark.master.startswith("local"):
        # Spark's web UI (and its driver) bind every interface unless SPARK_LOCAL_IP names one: a local session
        # has nothing to offer another machine, so its UI stays on loopback. Read when the JVM starts.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.ui.showConsoleProgress", "false")
        # Bronze is one small Parquet file per source file and event day, read by an explicit list of paths: list
        # them on the driver (the default starts a Spark job of one task per path beyond 32) and pack many into
        # one read task (the default assumes opening a file costs as much as reading 4 MB).
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
        .config("spark.sql.files.openCostInBytes", str(64 * 1024))
    )
    jars = [str(jar) for jar in settings.spark.jdbc_jars if jar.exists()]
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    if "spark.master" not in SparkSession.builder._options and not os.environ.get("SPARK_SUBMITTED"):
        builder = (
            builder.master(settings.spark.master)
            .config("spark.driver.memory", settings.spark.driver_memory)
            .config("spark.executor.memory", settings.spark.executor_memory)
        )
        for key, value in settings.spark.executor_memory_conf().items():
            builder = builder.config(key, value)
    return builder.getOrCreate()
