"""The default scenario: support tickets from three sources, with a learnable label.

The generator knows its own signal and defects, so it writes them to ``manifest.json``:
tests compare what ``prepare_data`` finds with what was planted.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
FIRST = ("Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sofia", "Lucas", "Mia", "Arjun",
         "Chloe", "Kenji", "Amara", "Diego", "Hannah", "Tomasz", "Leila", "Omar", "Ingrid", "Priya")
LAST = ("Martins", "Okafor", "Schmidt", "Nakamura", "Rossi", "Dubois", "Kowalski", "Haddad",
        "Larsen", "Fernandes", "Novak", "Brennan", "Ibrahim", "Lindqvist", "Moreau", "Tanaka")
DRIFT_SCENARIOS = ("none", "covariate", "new_product", "unit_change")
"""none: a fresh batch from the same process (the control); covariate: customers spend,
stay and use more; new_product: a smart speaker launches, with its own vocabulary and
more technical tickets; unit_change: telemetry reports latency in seconds, not ms."""
NEW_PRODUCT = "smart-speaker"
NEW_KEYWORDS = ["bluetooth pairing", "speaker offline", "firmware update", "voice assistant",
                "wake word", "volume stuck"]


@dataclass
class Manifest:
    """What was generated and planted; every count is exact."""

    seed: int
    rows: int
    customers: int
    drift: str | None
    label_noise: float
    generic_share: float
    bayes_accuracy: float
    target: str
    sources: dict[str, str]
    planted: dict[str, int]
    pii: dict[str, Any]


def _bayes_accuracy(label_noise: float, generic_share: float, prior: np.ndarray,
                    product_given: np.ndarray) -> float:
    """Best accuracy any model can reach: keyword rows lose only label noise; generic rows
    reveal only the product."""
    k = len(prior)
    noise = np.full((k, k), label_noise / (k - 1))
    np.fill_diagonal(noise, 1 - label_noise)
    joint = (prior[:, None] * product_given).T @ noise  # P(product, observed label)
    generic_acc = float(joint.max(axis=1).sum())
    return (1 - generic_share) * (1 - label_noise) + generic_share * generic_acc


def _luhn_card(rng: np.random.Generator) -> str:
    digits = [4, *rng.integers(0, 10, 14).tolist()]
    total = 0
    for i, d in enumerate(reversed(digits)):  # the check digit will sit to the right
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


CONTRACT = """\
# The scenario's declared rules: a response time is never negative. Rows that break
# them are quarantined with the rule they broke (data.contract).
schema_type: dataframe
columns:
  first_response_min:
    dtype: float64
    nullable: true
    checks:
      greater_than_or_equal_to: 0
"""


def generate(out: str | Path, rows: int = 4000, seed: int = 7,
             drift: str | None = None) -> Manifest:
    """Write tickets.csv, accounts.db (table ``accounts``), telemetry.parquet, contract.yaml
    and manifest.json.

    ``drift`` names a scenario from ``DRIFT_SCENARIOS``: the sources then hold a later
    batch to monitor against a model trained on the undrifted data.
    """
    if rows < 100:
        raise ValueError("rows must be at least 100")
    if drift is not None and drift not in DRIFT_SCENARIOS:
        raise ValueError(f"unknown drift scenario {drift!r}; choose from {DRIFT_SCENARIOS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed if drift is None else seed + 1000)
    label_noise, generic_share = 0.03, 0.08
    prior = np.array([0.3, 0.3, 0.2, 0.2])
    products = list(PRODUCTS)
    product_given = PRODUCT_GIVEN_CATEGORY.copy()
    keywords = {k: list(v) for k, v in KEYWORDS.items()}
    if drift == "new_product":
        prior = np.array([0.2, 0.5, 0.15, 0.15])
        products.append(NEW_PRODUCT)
        product_given = np.c_[product_given * 0.7, [0.3, 0.3, 0.3, 0.3]]
        keywords["technical"] += NEW_KEYWORDS
    n_customers = max(50, rows // 4)

    cust_ids = np.array([f"C{i:06d}" for i in range(n_customers)])
    spend_scale, sessions, tenure_high = (100.0, 45, 24) if drift == "covariate" else (40.0, 25, 72)
    first = rng.choice(FIRST, n_customers)
    last = rng.choice(LAST, n_customers)
    accounts = pd.DataFrame({
        "customer_id": cust_ids,
        "contact_name": [f"{f} {m}" for f, m in zip(first, last, strict=True)],
        "contact_email": [f"{f.lower()}.{m.lower()}{i}@example.com"
                          for i, (f, m) in enumerate(zip(first, last, strict=True))],
        "plan": rng.choice(PLANS, n_customers, p=[0.5, 0.35, 0.15]).astype(object),
        "region": rng.choice(REGIONS, n_customers),
        "tenure_months": rng.integers(1, tenure_high, n_customers),
        "monthly_spend": np.round(rng.gamma(2.0, spend_scale, n_customers), 2),
    })
    latency = np.round(rng.lognormal(5.0, 0.3, n_customers), 1)
    telemetry = pd.DataFrame({
        "customer_id": cust_ids,
        "sessions_30d": rng.poisson(sessions, n_customers),
        "errors_30d": rng.poisson(2, n_customers),
        "avg_latency_ms": latency / 1000 if drift == "unit_change" else latency,
    })

    true_cat = rng.choice(len(CATEGORIES), rows, p=prior)
    product = np.array([rng.choice(len(products), p=product_given[c] / product_given[c].sum())
                        for c in true_cat])
    generic = rng.random(rows) < generic_share
    bodies, subjects = [], []
    for c, is_generic in zip(true_cat, generic, strict=True):
        words = list(rng.choice(FILLER, 2, replace=False))
        if not is_generic:
            words += list(rng.choice(keywords[CATEGORIES[c]], 2, replace=False))
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
        "channel": rng.choice(CHANNELS, rows).astype(object),
        "product": np.array(products)[product],
        "subject": subjects,
        "body": bodies,
        "first_response_min": np.round(rng.lognormal(3.0, 0.8, rows), 1).astype(object),
        "category": np.array(CATEGORIES, dtype=object)[observed],
    })

    planted, pii, untouched = _plant_defects(rng, tickets, accounts, telemetry)
    tickets = _add_duplicates(rng, tickets, untouched, planted)
    _write(out, tickets, accounts, telemetry, planted)
    manifest = Manifest(
        seed=seed, rows=len(tickets) + planted["malformed_rows"], customers=n_customers,
        drift=drift, label_noise=label_noise, generic_share=generic_share,
        bayes_accuracy=round(_bayes_accuracy(label_noise, generic_share, prior, product_given), 4),
        target="category",
        sources={"tickets": "tickets.csv", "accounts": "accounts.db",
                 "telemetry": "telemetry.parquet"},
        planted=planted, pii=pii,
    )
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    return manifest


BROKEN_MARK = "@@broken@@"


def _plant_defects(rng: np.random.Generator, tickets: pd.DataFrame, accounts: pd.DataFrame,
                   telemetry: pd.DataFrame
                   ) -> tuple[dict[str, int], dict[str, Any], np.ndarray]:
    """Plant defects in place, each on its own rows so every count is exact; returns the
    counts, the planted PII, and the ticket rows left without any defect."""
    rows, n_customers = len(tickets), len(accounts)
    sizes = {"missing_target": rows // 200, "missing_channel": rows // 100,
             "orphan_customer_ids": rows // 400, "wrong_type": rows // 400,
             "impossible_value": rows // 400, "broken_encoding": rows // 500,
             "pii_in_text": rows // 20}
    sizes = {k: max(1, v) for k, v in sizes.items()}
    order = rng.permutation(rows)
    slices, at = {}, 0
    for name, size in sizes.items():
        slices[name], at = order[at : at + size], at + size

    tickets.loc[slices["missing_target"], "category"] = None
    tickets.loc[slices["missing_channel"], "channel"] = None
    tickets.loc[slices["orphan_customer_ids"], "customer_id"] = [
        f"X{i:06d}" for i in range(sizes["orphan_customer_ids"])]
    tickets.loc[slices["wrong_type"], "first_response_min"] = rng.choice(
        ["soon", "tbd", "asap", "12 minutes"], sizes["wrong_type"])
    tickets.loc[slices["impossible_value"], "first_response_min"] = -np.round(
        rng.uniform(1, 500, sizes["impossible_value"]), 1)
    tickets.loc[slices["broken_encoding"], "body"] = [
        f"{b} {BROKEN_MARK}" for b in tickets.loc[slices["broken_encoding"], "body"]]

    pii_values: list[str] = []
    text_counts = {"email": 0, "phone": 0, "credit_card": 0, "ip_address": 0, "person": 0}
    kinds = list(text_counts)
    for j, idx in enumerate(slices["pii_in_text"]):
        kind = kinds[j % len(kinds)]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        value = {
            "email": f"{first.lower()}.{last.lower()}@mail-{j}.com",
            "phone": f"+1 (415) 555-{1000 + j:04d}",
            "credit_card": _luhn_card(rng),
            "ip_address": f"10.{j % 250}.{(7 * j) % 250}.{1 + j % 200}",
            "person": f"{first} {last}",
        }[kind]
        sentence = {"email": "Reach me at {}.", "phone": "Call me on {}.",
                    "credit_card": "My card {} was charged.",
                    "ip_address": "Login attempts came from {}.",
                    "person": "This is {} from accounting."}[kind].format(value)
        tickets.loc[idx, "body"] = f"{tickets.loc[idx, 'body']} {sentence}"
        text_counts[kind] += 1
        pii_values.append(value)
    pii_values += accounts["contact_name"].tolist() + accounts["contact_email"].tolist()

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

    planted = {**sizes, "inconsistent_plan_labels": n_inconsistent,
               "missing_monthly_spend": n_missing_spend, "latency_outliers": n_outliers,
               "exact_duplicates": max(1, rows // 100), "near_duplicates": max(1, rows // 100),
               "malformed_rows": max(1, rows // 500)}
    pii = {"text": text_counts, "fields": {"contact_name": n_customers,
                                           "contact_email": n_customers},
           "values": sorted(set(pii_values))}
    return planted, pii, order[at:]


def _add_duplicates(rng: np.random.Generator, tickets: pd.DataFrame, untouched: np.ndarray,
                    planted: dict[str, int]) -> pd.DataFrame:
    """Exact copies (a double export) and near copies (re-typed text, a new ticket id) of
    rows that carry no other defect."""
    pool = rng.permutation(untouched)
    n_exact, n_near = planted["exact_duplicates"], planted["near_duplicates"]
    exact = tickets.loc[pool[:n_exact]]
    near = tickets.loc[pool[n_exact : n_exact + n_near]].copy()
    near["ticket_id"] = [f"TN{i:06d}" for i in range(n_near)]
    near["body"] = [("  " + b.upper() if i % 2 else b.replace(", ", ",   ") + "  ")
                    for i, b in enumerate(near["body"])]
    out = pd.concat([tickets, exact, near], ignore_index=True)
    return out.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


def _write(out: Path, tickets: pd.DataFrame, accounts: pd.DataFrame,
           telemetry: pd.DataFrame, planted: dict[str, int]) -> None:
    text = tickets.to_csv(index=False)
    data = text.encode().replace(BROKEN_MARK.encode(), b"caf\xe9 cr\xe8me")  # latin-1 bytes
    if data.count(b"caf\xe9") != planted["broken_encoding"]:
        raise RuntimeError("broken-encoding marker count changed")  # a generator bug
    bad_lines = "".join(f"TBAD{i:04d},C000001,2026-02-01 10:00,email,web-app,Hi,Broken,1,row,x\n"
                        for i in range(planted["malformed_rows"]))
    (out / "tickets.csv").write_bytes(data + bad_lines.encode())
    db_path = out / "accounts.db"
    db_path.unlink(missing_ok=True)
    with sqlite3.connect(db_path) as conn:
        accounts.to_sql("accounts", conn, index=False)
    telemetry.to_parquet(out / "telemetry.parquet", index=False)
    (out / "contract.yaml").write_text(CONTRACT)
