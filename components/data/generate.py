"""The default scenario: support tickets from three sources, with a learnable label.

The generator knows its own signal and defects, so it writes them to ``manifest.json``:
tests compare what ``prepare_data`` finds with what was planted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ("billing", "technical", "account", "feature_request")
PRODUCTS = ("billing-portal", "mobile-app", "web-app", "api")
# P(product | category): billing tickets come mostly from the billing portal, etc.
PRODUCT_GIVEN_CATEGORY = np.array([
    [0.70, 0.10, 0.15, 0.05],
    [0.05, 0.35, 0.30, 0.30],
    [0.20, 0.30, 0.40, 0.10],
    [0.05, 0.30, 0.35, 0.30],
])
KEYWORDS = {
    "billing": ["invoice", "charged twice", "refund", "payment failed", "credit card declined",
                "wrong amount", "billing cycle", "receipt"],
    "technical": ["error 500", "crashes on start", "timeout", "cannot load", "bug",
                  "stack trace", "latency spike", "sync fails"],
    "account": ["reset my password", "locked out", "change email", "two-factor",
                "delete my account", "login link", "username", "permissions"],
    "feature_request": ["would love", "please add", "dark mode", "export to excel",
                        "integration with", "feature idea", "roadmap", "wish list"],
}
FILLER = ["hello team", "thanks in advance", "as soon as possible", "this is urgent",
          "since yesterday", "on my laptop", "for our whole team", "following up",
          "see details below", "kind regards"]
PLANS = ("Free", "Pro", "Enterprise")
REGIONS = ("EU", "NA", "APAC", "LATAM")
CHANNELS = ("email", "chat", "phone", "web")


@dataclass
class Manifest:
    """What was generated and planted; counts are exact."""

    seed: int
    rows: int
    customers: int
    label_noise: float
    generic_share: float
    bayes_accuracy: float
    target: str
    sources: dict[str, str]
    planted: dict[str, int]


def _bayes_accuracy(label_noise: float, generic_share: float, prior: np.ndarray) -> float:
    """Best accuracy any model can reach: keyword rows lose only label noise; generic rows
    reveal only the product."""
    k = len(CATEGORIES)
    noise = np.full((k, k), label_noise / (k - 1))
    np.fill_diagonal(noise, 1 - label_noise)
    keyword_acc = 1 - label_noise
    joint = (prior[:, None] * PRODUCT_GIVEN_CATEGORY).T @ noise  # P(product, observed label)
    generic_acc = float(joint.max(axis=1).sum())
    return (1 - generic_share) * keyword_acc + generic_share * generic_acc


def generate(out: str | Path, rows: int = 4000, seed: int = 7) -> Manifest:
    """Write tickets.csv, accounts.db (table ``accounts``), telemetry.parquet, manifest.json."""
    if rows < 100:
        raise ValueError("rows must be at least 100")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    label_noise, generic_share = 0.03, 0.08
    prior = np.array([0.3, 0.3, 0.2, 0.2])
    n_customers = max(50, rows // 4)

    cust_ids = np.array([f"C{i:06d}" for i in range(n_customers)])
    plan = rng.choice(PLANS, n_customers, p=[0.5, 0.35, 0.15]).astype(object)
    accounts = pd.DataFrame({
        "customer_id": cust_ids,
        "plan": plan,
        "region": rng.choice(REGIONS, n_customers),
        "tenure_months": rng.integers(1, 72, n_customers),
        "monthly_spend": np.round(rng.gamma(2.0, 40.0, n_customers), 2),
    })
    telemetry = pd.DataFrame({
        "customer_id": cust_ids,
        "sessions_30d": rng.poisson(25, n_customers),
        "errors_30d": rng.poisson(2, n_customers),
        "avg_latency_ms": np.round(rng.lognormal(5.0, 0.3, n_customers), 1),
    })

    true_cat = rng.choice(len(CATEGORIES), rows, p=prior)
    product = np.array([rng.choice(len(PRODUCTS), p=PRODUCT_GIVEN_CATEGORY[c]) for c in true_cat])
    generic = rng.random(rows) < generic_share
    bodies, subjects = [], []
    for c, is_generic in zip(true_cat, generic, strict=True):
        words = list(rng.choice(FILLER, 2, replace=False))
        if not is_generic:
            words += list(rng.choice(KEYWORDS[CATEGORIES[c]], 2, replace=False))
        rng.shuffle(words)
        bodies.append(", ".join(words).capitalize() + ".")
        subjects.append(words[0].capitalize())
    flip = rng.random(rows) < label_noise
    observed = true_cat.copy()
    observed[flip] = (true_cat[flip] + rng.integers(1, len(CATEGORIES), flip.sum())) % len(
        CATEGORIES
    )
    start = np.datetime64("2026-01-01T00:00")
    tickets = pd.DataFrame({
        "ticket_id": [f"T{i:07d}" for i in range(rows)],
        "customer_id": rng.choice(cust_ids, rows),
        "created_at": (start + rng.integers(0, 300 * 24 * 60, rows).astype("timedelta64[m]"))
        .astype(str),
        "channel": rng.choice(CHANNELS, rows),
        "product": np.array(PRODUCTS)[product],
        "subject": subjects,
        "body": bodies,
        "category": np.array(CATEGORIES, dtype=object)[observed],
    })

    planted = _plant_defects(rng, tickets, accounts, telemetry, n_customers)
    n_dup = planted["exact_duplicates"]
    dup_rows = tickets.sample(n_dup, random_state=seed)
    tickets = pd.concat([tickets, dup_rows], ignore_index=True)
    tickets = tickets.sample(frac=1.0, random_state=seed).reset_index(drop=True)

    csv_path = out / "tickets.csv"
    tickets.to_csv(csv_path, index=False)
    malformed = planted["malformed_rows"]
    with csv_path.open("a") as fh:
        for i in range(malformed):
            fh.write(f"TBAD{i:04d},C000001,2026-02-01 10:00,email,web-app,Hi,Broken,row,extra\n")
    db_path = out / "accounts.db"
    db_path.unlink(missing_ok=True)
    with sqlite3.connect(db_path) as conn:
        accounts.to_sql("accounts", conn, index=False)
    telemetry.to_parquet(out / "telemetry.parquet", index=False)

    manifest = Manifest(
        seed=seed,
        rows=len(tickets) + malformed,
        customers=n_customers,
        label_noise=label_noise,
        generic_share=generic_share,
        bayes_accuracy=round(_bayes_accuracy(label_noise, generic_share, prior), 4),
        target="category",
        sources={"tickets": "tickets.csv", "accounts": "accounts.db",
                 "telemetry": "telemetry.parquet"},
        planted=planted,
    )
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


def _plant_defects(
    rng: np.random.Generator,
    tickets: pd.DataFrame,
    accounts: pd.DataFrame,
    telemetry: pd.DataFrame,
    n_customers: int,
) -> dict[str, int]:
    """Plant defects in place; returns exact counts."""
    rows = len(tickets)
    n_missing_target = max(1, rows // 200)
    idx = rng.choice(rows, n_missing_target, replace=False)
    tickets.loc[idx, "category"] = None

    n_missing_channel = max(1, rows // 100)
    idx = rng.choice(rows, n_missing_channel, replace=False)
    tickets.loc[idx, "channel"] = None

    n_orphans = max(1, rows // 400)
    idx = rng.choice(rows, n_orphans, replace=False)
    tickets.loc[idx, "customer_id"] = [f"X{i:06d}" for i in range(n_orphans)]

    n_inconsistent = max(1, n_customers // 20)
    idx = rng.choice(n_customers, n_inconsistent, replace=False)
    accounts.loc[idx, "plan"] = [
        rng.choice([p.lower(), p.upper(), p.lower() + " "]) for p in accounts.loc[idx, "plan"]
    ]

    n_missing_spend = max(1, n_customers // 50)
    idx = rng.choice(n_customers, n_missing_spend, replace=False)
    accounts.loc[idx, "monthly_spend"] = np.nan

    n_outliers = max(1, n_customers // 100)
    idx = rng.choice(n_customers, n_outliers, replace=False)
    telemetry.loc[idx, "avg_latency_ms"] = telemetry.loc[idx, "avg_latency_ms"] * 1000

    return {
        "missing_target": n_missing_target,
        "missing_channel": n_missing_channel,
        "orphan_customer_ids": n_orphans,
        "inconsistent_plan_labels": n_inconsistent,
        "missing_monthly_spend": n_missing_spend,
        "latency_outliers": n_outliers,
        "exact_duplicates": max(1, rows // 100),
        "malformed_rows": max(1, rows // 500),
    }
