"""The one intake path, :func:`dedupkit.intake.record.record`: what becomes of each submission."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from dedupkit import InvalidEvent, UnknownEventName
from dedupkit.errors import EventNotAllowed
from dedupkit.intake.record import IntakeOutcome, Recorded, Submission, current_visitor, record
from dedupkit.intake.tickets import TicketRefused
from dedupkit.state import get_state

from ..conftest import AppFactory, queued, shopper_request

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def record_in_request(app: Flask, submission: Submission, **request: Any) -> Recorded:
    with shopper_request(app, "/thanks", **request):
        state = get_state(app)
        return record(state, submission, current_visitor(state))


def test_a_shoppers_checkout_is_queued_once_and_a_repeat_is_a_duplicate(app: Flask) -> None:
    checkout = Submission("checkout", {"order_id": "A-1", "value": "9.50", "currency": "USD"})
    first = record_in_request(app, checkout)
    second = record_in_request(app, checkout)
    assert (first.outcome, second.outcome) == (IntakeOutcome.QUEUED, IntakeOutcome.DUPLICATE)
    assert first.event.event_id == second.event.event_id == "checkout-A-1"
    [payload] = queued(app)
    assert payload["event_name"] == "checkout"
    assert payload["custom_data"]["value"] == "9.50"


def test_the_name_is_resolved_once_in_either_spelling(app: Flask) -> None:
    recorded = record_in_request(app, Submission("AddToCart", {"value": 3}))
    assert (recorded.event.capi_name, recorded.event.tag_name) == ("add_to_cart", "addtocart")
    with pytest.raises(UnknownEventName, match="'bogus'"):
        record_in_request(app, Submission("bogus"))


def test_a_bot_is_skipped_with_its_reason_and_nothing_is_queued(app: Flask) -> None:
    recorded = record_in_request(app, Submission("page_visit"), headers={"User-Agent": GOOGLEBOT})
    assert (recorded.outcome, recorded.status) == (IntakeOutcome.SKIPPED, "skipped: bot")
    assert queued(app) == []


def test_a_refused_consent_skips_the_event(make_app: AppFactory) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    recorded = record_in_request(app, Submission("page_visit"))
    assert recorded.status == "skipped: no_consent"
    granted = record_in_request(
        app,
        Submission("page_visit"),
        headers={
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "Cookie": "_dedupkit_consent=1",
        },
    )
    assert granted.outcome is IntakeOutcome.QUEUED


def test_gpc_with_opt_out_skips_on_the_api_channel(make_app: AppFactory) -> None:
    app = make_app(GPC="opt_out")
    recorded = record_in_request(app, Submission("page_visit", page_gpc=True))
    assert recorded.status == "skipped: gpc_opt_out"
    assert queued(app) == []


def test_a_disabled_kit_builds_the_event_but_stores_nothing(make_app: AppFactory) -> None:
    app = make_app(ENABLED=False)
    recorded = record_in_request(app, Submission("checkout", {"order_id": "A-2"}))
    assert recorded.outcome is IntakeOutcome.DISABLED
    assert recorded.event.event_id == "checkout-A-2"


def test_the_browser_may_not_report_a_conversion_without_a_ticket(app: Flask) -> None:
    with pytest.raises(EventNotAllowed, match=r"kit\.ticket"):
        record_in_request(app, Submission("checkout", {"order_id": "A-3"}, from_browser=True))
    with pytest.raises(TicketRefused):
        record_in_request(
            app,
            Submission("checkout", {"order_id": "A-3"}, from_browser=True, ticket="forged"),
        )
    assert queued(app) == []


def test_outside_a_request_an_event_without_identity_is_a_programming_error(app: Flask) -> None:
    with app.app_context(), pytest.raises(InvalidEvent, match="needs an email"):
        record(get_state(app), Submission("checkout", {"order_id": "A-4"}), None)


def test_in_a_request_without_ip_or_user_agent_the_event_is_skipped(
    make_app: AppFactory,
) -> None:
    # With the bot filter on, a request with no user agent is a bot; without it, no identity.
    app = make_app(BOT_FILTER=False)
    recorded = record_in_request(
        app, Submission("page_visit"), headers={}, environ_base={"REMOTE_ADDR": ""}
    )
    assert recorded.status == "skipped: no_identity"
