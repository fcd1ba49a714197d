import numpy as np
import pandas as pd
import pytest

from components.common.errors import UserError
from components.common.settings import PrivacySettings
from components.data.privacy import Scrubber, field_kind, luhn_ok, mask_texts, scrub_sources
from components.data.sources import SourceTable

MASK = PrivacySettings()


@pytest.mark.parametrize(("text", "expected"), [
    ("mail jane.doe@example.com now", "mail <EMAIL> now"),
    ("call +1 (415) 555-0132 today", "call <PHONE> today"),
    ("or 030 1234 5678", "or <PHONE>"),
    ("card 4111 1111 1111 1111 declined", "card <CREDIT_CARD> declined"),
    ("from 192.168.10.25.", "from <IP_ADDRESS>."),
    ("4111 1111 1111 1111 192.168.10.25", "<CREDIT_CARD> <IP_ADDRESS>"),
    ("amex 3782 822463 10005", "amex <CREDIT_CARD>"),
    ("This is Olivia Martins from sales", "This is <PERSON> from sales"),
    ("Error 500 on login, stack trace attached", "Error 500 on login, stack trace attached"),
    ("Version 2.3.1 crashed at 2026-02-01 10:00", "Version 2.3.1 crashed at 2026-02-01 10:00"),
])
def test_text_scrubbing(text: str, expected: str) -> None:
    assert Scrubber(MASK).text(text) == expected


def test_luhn() -> None:
    assert luhn_ok("4111 1111 1111 1111") and not luhn_ok("4111 1111 1111 1112")
    # A 16-digit number failing Luhn is no card (it may still be masked as a phone number:
    # over-scrubbing is the safe side).
    assert "<CREDIT_CARD>" not in Scrubber(MASK).text("order 1234 5678 9012 3456")


def test_pseudonyms_are_keyed_and_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PrivacySettings(mode="pseudonymize")
    monkeypatch.delenv("MLCYCLE_PII_KEY", raising=False)
    with pytest.raises(UserError, match="set MLCYCLE_PII_KEY"):
        Scrubber(settings)
    monkeypatch.setenv("MLCYCLE_PII_KEY", "k1")
    a = Scrubber(settings).text("a@b.io and A@B.io")
    token = a.split()[0]
    assert token.startswith("<EMAIL:") and a == f"{token} and {token}"
    monkeypatch.setenv("MLCYCLE_PII_KEY", "k2")
    assert Scrubber(settings).text("a@b.io").split()[0] != token


def test_fields_are_found_and_replaced_whole() -> None:
    frame = pd.DataFrame({"who": ["Ada Lovelace", "Alan Turing", "Grace Hopper"],
                          "contact_name": ["Ada Lovelace", "Alan Turing", "Grace Hopper"],
                          "mail": ["ada@x.org", "alan@y.org", None],
                          "note": ["Ada Lovelace called", "fine", "ok"]})
    assert field_kind(frame["mail"], "mail") == "email"
    assert field_kind(frame["contact_name"], "contact_name") == "person"
    assert field_kind(frame["note"], "note") is None
    [table], report = scrub_sources([SourceTable("t", frame, ["x,ada@x.org,1"])], MASK)
    assert set(table.frame["mail"].dropna()) == {"<EMAIL>"}
    assert set(table.frame["contact_name"]) == {"<PERSON>"}
    assert table.frame["note"][0] == "<PERSON> called"  # a known name, found in free text
    assert table.malformed == ["x,<EMAIL>,1"]
    assert report["fields"] == {"t.contact_name": "person", "t.mail": "email"}


def test_model_text_transform_masks_like_training() -> None:
    texts = np.array(["reach me at a@b.io", "no pii here", "card 4111111111111111"], dtype=object)
    assert mask_texts(texts).tolist() == ["reach me at <EMAIL>", "no pii here",
                                          "card <CREDIT_CARD>"]
