"""Alerts: a condition held for ``monitoring.consecutive_checks`` checks fires once per
incident, and resolves once when it clears. The state lives in a JSON file, so checks run
one at a time (``mlcycle monitor --once`` from cron) keep their streaks.

Payloads: Alertmanager's webhook (version 4), so anything that takes Alertmanager's
notifications takes ours, or a Slack incoming webhook's ``text`` and ``blocks``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.common.settings import Webhook

log = logging.getLogger(__name__)
NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for a firing alert
ALERT_NAMES = {"dataset_drift": "MlcycleDatasetDrift",
               "prediction_drift": "MlcyclePredictionDrift",
               "performance_drop": "MlcyclePerformanceDrop",
               "retrain_refused": "MlcycleRetrainRefused"}


@dataclass
class Alert:
    """One incident's notification, firing or resolved."""

    condition: str
    status: str  # firing or resolved
    model: str
    version: str
    summary: str
    description: str
    action: str
    report: str
    starts_at: str
    ends_at: str = NEVER

    @property
    def fingerprint(self) -> str:
        """The same model and condition is the same incident while it lasts."""
        return hashlib.sha256(f"{self.model}|{self.condition}".encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        return {"alertname": ALERT_NAMES[self.condition], "model": self.model,
                "version": self.version, "severity": "warning", "service": "mlcycle"}


@dataclass
class AlertState:
    streaks: dict[str, int] = field(default_factory=dict)
    firing: dict[str, dict[str, Any]] = field(default_factory=dict)
    undelivered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by URL

    @classmethod
    def load(cls, path: Path) -> AlertState:
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))


def update(state: AlertState, conditions: dict[str, Alert | None],
           consecutive: int) -> list[Alert]:
    """Advance each condition's streak; returns the alerts due (new firings, resolutions).
    ``conditions`` maps each checked condition to its would-be alert, or None when clear."""
    due: list[Alert] = []
    for name, alert in conditions.items():
        if alert is not None:
            state.streaks[name] = state.streaks.get(name, 0) + 1
            if state.streaks[name] >= consecutive and name not in state.firing:
                state.firing[name] = asdict(alert)
                due.append(alert)
        else:
            state.streaks[name] = 0
            if name in state.firing:
                fired = Alert(**state.firing.pop(name))
                fired.status, fired.ends_at = "resolved", _now()
                due.append(fired)
    return due


def alertmanager_payload(alerts: list[Alert], external_url: str) -> dict[str, Any]:
    """Alertmanager's webhook body, version 4, one group per model."""
    common = dict.fromkeys(("model", "service", "severity"))
    labels = [a.labels() for a in alerts]
    common_labels = {k: labels[0][k] for k in common if all(x[k] == labels[0][k] for x in labels)}
    status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    return {
        "version": "4", "groupKey": f'{{}}:{{model="{alerts[0].model}"}}',
        "truncatedAlerts": 0, "status": status, "receiver": "mlcycle",
        "groupLabels": {"model": alerts[0].model}, "commonLabels": common_labels,
        "commonAnnotations": {}, "externalURL": external_url,
        "alerts": [{"status": a.status, "labels": a.labels(),
                    "annotations": {"summary": a.summary, "description": a.description,
                                    "action": a.action, "report": a.report},
                    "startsAt": a.starts_at, "endsAt": a.ends_at,
                    "generatorURL": external_url, "fingerprint": a.fingerprint}
                   for a in alerts]}


def slack_payload(alerts: list[Alert]) -> dict[str, Any]:
    lines = [f"{'RESOLVED' if a.status == 'resolved' else 'FIRING'}: {a.summary}" for a in alerts]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": (
        f"*{'Resolved' if a.status == 'resolved' else 'Firing'}: {a.summary}*\n"
        f"{a.description}\n*Action:* {a.action}\n*Report:* `{a.report}`")}} for a in alerts]
    return {"text": "\n".join(lines), "blocks": blocks}


def deliver(alerts: list[Alert], webhooks: list[Webhook], external_url: str,
            state: AlertState) -> int:
    """Send ``alerts``, with whatever a webhook failed to take before; returns the posts
    that succeeded. A failed post is kept for that webhook's next try: nothing is lost."""
    import httpx

    delivered = 0
    for hook in webhooks:
        pending = [Alert(**a) for a in state.undelivered.pop(hook.url, [])] + alerts
        if not pending:
            continue
        body = (alertmanager_payload(pending, external_url) if hook.format == "alertmanager"
                else slack_payload(pending))
        try:
            httpx.post(hook.url, json=body, timeout=10).raise_for_status()
            delivered += 1
        except httpx.HTTPError as exc:
            log.warning("alert to %s failed, kept for the next check: %s", hook.url, exc)
            state.undelivered[hook.url] = [asdict(a) for a in pending]
    return delivered


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
