"""mlcycle's own Prometheus families, on BentoML's ``/metrics`` beside its own (BentoML
collects every worker's through ``PROMETHEUS_MULTIPROC_DIR``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MODEL_VERSION = Gauge("mlcycle_model_version_info", "The served model version (1 = serving).",
                      ["model", "version"], multiprocess_mode="livemax")
PREDICTIONS = Counter("mlcycle_predictions", "Rows predicted, by predicted class.", ["label"])
RELOADS = Counter("mlcycle_reloads", "Champion reload attempts, by result.", ["result"])
REJECTED = Counter("mlcycle_rejected_requests", "Requests refused, by reason.", ["reason"])
LOGGED = Counter("mlcycle_prediction_log_rows", "Rows written to the prediction log.")
