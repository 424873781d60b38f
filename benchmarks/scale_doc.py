"""docs/benchmarks/scale.md from `scale.py`'s results (every size run so far, merged in `results.json`)."""

from __future__ import annotations

from pathlib import Path

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "scale.md"
STAGES = ("ingest", "features", "training", "spark_scoring", "spark_scoring_grown")
# Issue 20's bound on the driver's peak resident memory.
DRIVER_LIMIT_MB = 2048


def _stage_rows(figures: dict) -> list[str]:
    rows = [
        "| stage | seconds | CPU seconds | µs per event | driver Python peak RSS (MiB) | driver JVM peak RSS (MiB) "
        "| executor JVM peak RSS (MiB) | Python workers peak PSS (MiB) | all together, peak (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        if f"{stage}_seconds" not in figures:
            continue
        seconds = figures[f"{stage}_seconds"]
        # Runs before the sampler told executors apart had them inside the driver JVM (local mode).
        executor = figures.get(f"{stage}_executor_jvm_peak_mb", "in driver JVM")
        rows.append(
            f"| {stage} | {seconds:.1f} | {_cpu(figures, stage)} | {seconds / figures['events'] * 1e6:.2f} "
            f"| {figures[f'{stage}_driver_python_peak_mb']} | {figures[f'{stage}_driver_jvm_peak_mb']} "
            f"| {executor} | {figures[f'{stage}_python_workers_pss_peak_mb']} | {figures[f'{stage}_total_peak_mb']} |"
        )
    return rows


def _cpu(figures: dict, stage: str) -> str:
    # Runs before the sampler counted CPU time have none.
    cpu = figures.get(f"{stage}_cpu_seconds")
    return "–" if cpu is None else f"{cpu:.0f}"


def _driver_statement(figures: dict) -> str:
    stages = [stage for stage in STAGES if f"{stage}_seconds" in figures]
    python = max(figures[f"{stage}_driver_python_peak_mb"] for stage in stages)
    jvm = max(figures[f"{stage}_driver_jvm_peak_mb"] for stage in stages)
    driver = max(figures[f"{stage}_driver_python_peak_mb"] + figures[f"{stage}_driver_jvm_peak_mb"] for stage in stages)
    if "standalone" not in str(figures.get("spark_master")):
        verdict = "stayed under" if python < DRIVER_LIMIT_MB else "did NOT stay under"
        return (
            f"The driver's Python process peaked at {python} MiB over all stages: it {verdict} 2 GiB. The driver JVM "
            f"(which in local mode also runs the executors, so its heap is capped by spark.driver.memory = "
            f"{figures['spark_driver_memory']}) peaked at {jvm} MiB resident (heap plus the JVM's own memory)."
        )
    executor = max(figures.get(f"{stage}_executor_jvm_peak_mb", 0) for stage in stages)
    verdict = "stayed under" if driver < DRIVER_LIMIT_MB else "did NOT stay under"
    return (
        f"On the standalone cluster the driver is the Python process and its JVM (spark.driver.memory = "
        f"{figures['spark_driver_memory']}): their summed RSS peaked at {driver} MiB in one stage (Python {python}, "
        f"JVM {jvm} at their own peaks), so the driver {verdict} 2 GiB. "
        + _executor_statement(figures, stages, executor)
    )


def _executor_statement(figures: dict, stages: list[str], executor: int) -> str:
    """The executor JVM's and its Python workers' peaks against their budgets: heap + overhead (stated, or Spark's
    max(384 MiB, 10 %)) and spark.executor.pyspark.memory (when stated)."""
    heap = figures.get("spark_executor_heap", str(figures["spark_executor_memory"]).split(" ")[0])
    stated = figures.get("spark_executor_memory_overhead")
    overhead = mebibytes(stated) if stated else max(384, mebibytes(heap) // 10)
    budget = mebibytes(heap) + overhead
    how = f"spark.executor.memoryOverhead = {stated}" if stated else "Spark's default overhead max(384 MiB, 10 %)"
    within = "within" if executor <= budget else "OVER"
    text = (
        f"The executor JVM (heap spark.executor.memory = {figures['spark_executor_memory']}, {how}: a budget of "
        f"{budget} MiB resident) peaked at {executor} MiB, {within} it."
    )
    workers = max(figures.get(f"{stage}_python_workers_pss_peak_mb", 0) for stage in stages)
    pyspark = figures.get("spark_executor_pyspark_memory")
    if pyspark:
        within = "within" if workers <= mebibytes(pyspark) else "OVER"
        return (
            f"{text} Its Python workers (spark.executor.pyspark.memory = {pyspark}) peaked at {workers} MiB PSS "
            f"together, {within} it."
        )
    return (
        f"{text} Its Python workers (spark.executor.pyspark.memory not stated: unbounded) peaked at {workers} MiB PSS."
    )


def mebibytes(size: str) -> int:
    """A Spark memory size (`3g`, `512m`, `384k`; a bare number is MiB, as Spark reads these settings) in MiB."""
    size = size.strip().lower().removesuffix("b")
    factors = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2}
    if size and size[-1] in factors:
        return int(float(size[:-1]) * factors[size[-1]])
    return int(size)


def _scaling_rows(sizes: list[tuple[int, dict]], measure: str = "seconds") -> list[str]:
    """Growth of each stage's `measure` (`seconds`: wall time; `cpu_seconds`: CPU time of every process)."""
    what = "time" if measure == "seconds" else "CPU time"
    rows = [
        "| from → to (events) | size ratio | "
        + " | ".join(f"{stage} {what} ratio (per event)" for stage in STAGES[:4])
        + " |",
        "|---|---:|" + "---:|" * 4,
    ]
    for (small, low), (large, high) in zip(sizes, sizes[1:], strict=False):
        ratios = []
        for stage in STAGES[:4]:
            key = f"{stage}_{measure}"
            if key in low and key in high and low[key] > 0:
                whole = high[key] / low[key]
                per_event = whole / (high["events"] / low["events"])
                ratios.append(f"{whole:.2f} ({per_event:.2f})")
            else:
                ratios.append("–")
        rows.append(f"| {small:,} → {large:,} | {high['events'] / low['events']:.2f} | " + " | ".join(ratios) + " |")
    return rows


def render(results: dict) -> str:
    sizes = sorted(((int(size), figures) for size, figures in results["sizes"].items()), key=lambda item: item[0])
    lines = [
        "# Scale: partitioned sources through ingestion, features and Spark scoring (issue 20)",
        "",
        "Written by `benchmarks/scale.py --write-doc` from every size in its `results.json`; a benchmark, not a timed",
        "test. Each size: the seeded generator's events as one Parquet file per month, ingested into bronze, the",
        "feature job's entry point (`prepare_run` + `build_feature_snapshot`), a small training (a champion to score",
        "with), and the scoring list on Spark into Parquet and a fresh PostgreSQL database. Memory is sampled every",
        "100 ms: the driver's Python process and the driver JVM by RSS, the JVM's forked Python workers by PSS",
        "(`benchmarks/memory_sampler.py`). PySpark keeps its JVM for the life of the Python process (`spark.stop()`",
        "ends the session, not the gateway), so one JVM serves every stage and a stage's JVM peak can include heap an",
        "earlier stage left; in local mode that JVM also runs the executors, so their memory is the driver's",
        "(`spark.driver.memory`). With `--cluster` the run starts a standalone cluster of its own (one master, one",
        "worker with 2 cores; `benchmarks/standalone_cluster.py`, the same daemons as the native stack's and",
        "compose's), so the driver JVM holds only the driver and the executor JVM is read apart, against",
        "`spark.executor.memory`. A size run with `--stages` keeps the figures of the stages an earlier run of it",
        "recorded. Times are wall-clock on a shared machine: read them with the load averages.",
        "",
    ]
    if sizes and max(size for size, _ in sizes) < 10_000_000:
        lines += [
            f"**Smoke run only** (largest size {max(size for size, _ in sizes):,} events): these figures check that",
            "the benchmark runs end to end; they are not issue 20's 10M-100M measurements.",
            "",
        ]
    for size, figures in sizes:
        machine = figures["machine"]
        lines += [
            f"## {size:,} events",
            "",
            f"- Command: `{figures['command']}` (commit {machine['commit']}, finished {figures['finished']})",
            f"- Machine: {machine['cpus']} cores, {machine['memory_gib']} GiB, {machine['platform']}, "
            f"Python {machine['python']}",
            f"- Load average (1, 5, 15 min) before: {figures['load_average_before']}, "
            f"after: {figures['load_average_after']}",
            f"- Sources: {figures['events']:,} events in {figures['source_files']} monthly files "
            f"({figures['source_mb']} MiB), "
            + ("kept from an earlier run" if figures.get("sources_reused") else "generated")
            + f" in {figures['sources_seconds']:.0f} s (not a stage)",
            f"- Ingestion engine: {figures.get('ingest_engine', '–')}; Spark master {figures['spark_master']}, "
            f"driver memory {figures['spark_driver_memory']}, executor memory "
            f"{figures['spark_executor_memory']}",
            f"- Snapshot rows (every cutoff): {figures.get('snapshot_rows', 0):,}; "
            + (
                f"customers scored: {figures['customers_scored']:,} ({figures['scores_in_database']:,} rows in "
                "PostgreSQL)"
                if "customers_scored" in figures
                else "not trained or scored at this size (stages: " + ", ".join(figures.get("stages", [])) + ")"
            ),
            "",
            # What the figures alone do not say (a stall, a re-attempt), recorded in results.json by hand.
            *([figures["note"], ""] if figures.get("note") else []),
            *_stage_rows(figures),
            "",
            _driver_statement(figures),
            "",
        ]
        if "grown_sample_check" in figures:
            check = figures["grown_sample_check"]
            lines += [
                f"Grown list: {figures['grown_customers_scored']:,} customers scored on Spark "
                f"({figures['grown_scores_in_database']:,} rows in PostgreSQL, replacing the first list: "
                f"{figures['scores_in_database_after_grown']:,} rows in the scores table); "
                f"of a sample of {check['sample']:,}, "
                f"{check['identical']:,} scores identical to the pandas path's (largest difference "
                f"{check['max_abs_difference']:.3g}).",
                "",
            ]
    if len(sizes) > 1:
        lines += [
            "## Growth between sizes",
            "",
            "Each cell: how many times longer the stage took, and in brackets that ratio divided by the ratio of",
            "events (time per event). A bracketed figure at or below 1 means the stage grew no faster than linearly.",
            "",
            *_scaling_rows(sizes),
            "",
            "The same for the CPU seconds all the run's processes spent in the stage (driver, JVMs, Python workers,",
            "cluster daemons): unlike wall time, it hardly grows when other work shares the machine.",
            "",
            *_scaling_rows(sizes, "cpu_seconds"),
            "",
        ]
    return "\n".join(lines)


def write_doc(results: dict) -> Path:
    DOC_PATH.write_text(render(results))
    return DOC_PATH
