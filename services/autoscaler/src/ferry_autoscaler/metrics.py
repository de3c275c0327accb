"""Prometheus metrics of the autoscaler itself."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CYCLES = Counter("ferry_autoscaler_cycles_total", "Scaling cycles run, by target type.", ["target"])
SCALE_WRITES = Counter("ferry_autoscaler_scale_writes_total", "Replica writes, by direction.", ["direction"])
SKIPPED = Counter("ferry_autoscaler_skipped_total", "Cycles skipped because no metric had a value.")
SCRAPE_FAILURES = Counter(
    "ferry_autoscaler_scrape_failures_total", "Metric groups dropped by a failed scrape."
)
CYCLE_SECONDS = Histogram("ferry_autoscaler_cycle_seconds", "One scaling cycle of one policy.")
LEASES_HELD = Gauge("ferry_autoscaler_leases_held", "Policies this replica decides for.")
DEMAND = Counter("ferry_autoscaler_demand_total", "Demand messages, by outcome.", ["outcome"])
PUSHED_READS = Counter(
    "ferry_autoscaler_pushed_reads_total",
    "Pod metric reads served by the load its sidecar pushed (no scrape).",
)
