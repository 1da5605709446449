"""The text of a removal reject at a provider that cannot remove (sync/engine/push.py): a refusal of
the member's push under its key is told inside it, and what a person must do stays whole."""

from __future__ import annotations

from sync.engine.plan import Chunk
from sync.engine.push import _EARLIER, _drop_earlier, _keeping_panel_action, _without_meanwhile
from sync.engine.rejects import REMOVAL_UNSUPPORTED
from sync.errors import RejectedRow
from sync.models import Reject

OWN = "fakeprovider cannot remove members through its API: remove old@example.com (left the list) in its panel"


def _removal(reason: str) -> Reject:
    return Reject(connection_id=1, crm_member_id="M1", crm_list_id="L1", email="old@example.com",
                  reason=reason, provider_code=REMOVAL_UNSUPPORTED, attempts=1)


def test_a_refusal_near_the_text_limit_leaves_the_panel_action_and_its_addresses_whole() -> None:
    named = _EARLIER.format("older@example.com, oldest@example.com")
    row = _removal(OWN + named)
    refusal = RejectedRow("x" * 1990 + " (will retry)", provider_code="retriable")

    address, kept = _keeping_panel_action(Chunk(), row, "new@example.com", refusal)

    assert address == "old@example.com"
    assert kept.provider_code == REMOVAL_UNSUPPORTED
    assert len(kept.reason) <= 2000
    assert kept.reason.startswith(OWN + " [meanwhile: xxx")
    assert kept.reason.endswith(named)
    assert _without_meanwhile(kept.reason) == OWN + named


def test_a_refusal_told_again_replaces_the_one_told_before() -> None:
    row = _removal(OWN)
    _, first = _keeping_panel_action(Chunk(), row, "new@example.com", RejectedRow("timed out (will retry)"))
    row.reason = first.reason
    _, second = _keeping_panel_action(Chunk(), row, "new@example.com", RejectedRow("HTTP 503 (will retry)"))

    assert second.reason == OWN + " [meanwhile: HTTP 503 (will retry) :meanwhile]"


def test_a_push_of_an_earlier_address_drops_it_and_the_refusal_told() -> None:
    row = _removal(OWN + " [meanwhile: timed out :meanwhile]" + _EARLIER.format("older@example.com, x@example.com"))

    _drop_earlier(row, "older@example.com")

    assert row.reason == OWN + _EARLIER.format("x@example.com")


def test_a_refusal_of_the_removed_address_itself_replaces_the_removal() -> None:
    row = _removal(OWN)
    refusal = RejectedRow("invalid address", provider_code="validation")

    assert _keeping_panel_action(Chunk(), row, "old@example.com", refusal) == ("old@example.com", refusal)
