"""Prometheus metrics, defined once per process (they hold counters, not connections)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READINGS = Counter(
    "egenmon_readings_total",
    "Readings received, by source and outcome",
    ["source", "outcome"],  # outcome: accepted, rejected, duplicate
)
INGEST_LATENCY = Histogram(
    "egenmon_ingest_latency_seconds",
    "From request or message to committed answer",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_ROWS = Histogram(
    "egenmon_batch_rows",
    "Rows per committed batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
)
MQTT_BACKLOG = Gauge("egenmon_mqtt_backlog", "MQTT messages received but not yet acknowledged")
QUARANTINED = Counter("egenmon_quarantined_total", "Entries put in quarantine", ["source"])
ALERTS_OPENED = Counter("egenmon_alerts_opened_total", "Alerts opened, by rule", ["rule"])
ALERT_CHANGES = Counter(
    "egenmon_alert_changes_total",
    "Alerts opened, re-opened (a worse deviation or a new episode) or escalated, by rule",
    ["rule", "event"],  # event: opened, reopened, escalated
)
SCHEDULER_RUNS = Counter("egenmon_scheduler_runs_total", "Scheduler cycles run as leader")
WEBHOOK_DELIVERIES = Counter(
    "egenmon_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome",
    ["outcome"],  # delivered; retrying (attempt failed, tried again later); failed (given up)
)
