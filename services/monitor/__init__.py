"""The monitor: scheduled drift checks over the prediction log, with /metrics."""
