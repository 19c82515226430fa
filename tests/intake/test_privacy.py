"""GPC and LDP, one decision on both channels; the site's consent hook."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from flask import Flask, Request, render_template_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit import ConfigurationError
from dedupkit.event.user_data import sha256_hex
from dedupkit.intake.record import current_visitor
from dedupkit.intake.visitor import Consent
from dedupkit.state import get_state

from ..conftest import CHROME_UA, AppFactory, kit_for, queued

GEO = {"GEO_COUNTRY_HEADER": "CF-IPCountry", "GEO_REGION_HEADER": "X-Region"}
CALIFORNIA = {"CF-IPCountry": "US", "X-Region": "US-CA"}


def thanks_page(app: Flask, headers: dict[str, str], **user: Any) -> str:
    """The thank-you page: track the checkout, render the tag call."""
    with app.test_request_context(
        "/thanks/A-1001",
        headers={"User-Agent": CHROME_UA, **headers},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    ):
        event = kit_for(app).track(
            "checkout", order_id="A-1001", value="24.13", currency="USD", user=user
        )
        return render_template_string("{{ dedupkit.pintrk(event) }}", event=event)


def test_gpc_sends_an_ldp_event_on_both_channels(make_app: AppFactory) -> None:
    app = make_app(**GEO)
    html = thanks_page(app, {"Sec-GPC": "1", **CALIFORNIA})
    [event] = queued(app)
    assert event["custom_data"]["opt_out_type"] == "LDP"
    assert event["user_data"]["st"] == [sha256_hex("ca")]
    assert event["user_data"]["country"] == [sha256_hex("us")]
    # The tag is flagged the same way, before its event.
    set_call = html.index("pintrk('set',")
    assert set_call < html.index("d.mirror(t,x,n):window.pintrk&&pintrk('track',t,x)")
    assert f'"st": "{sha256_hex("ca")}"' in html
    assert '"opt_out_type": "LDP"' in html


def test_the_callers_state_beats_the_cdns(make_app: AppFactory) -> None:
    app = make_app(**GEO)
    thanks_page(app, {"Sec-GPC": "1", **CALIFORNIA}, state="NY", country="US")
    [event] = queued(app)
    assert event["user_data"]["st"] == [sha256_hex("ny")]


def test_without_gpc_nothing_is_flagged(make_app: AppFactory) -> None:
    app = make_app(**GEO)
    html = thanks_page(app, CALIFORNIA)
    [event] = queued(app)
    assert "opt_out_type" not in event.get("custom_data", {})
    assert "st" not in event["user_data"]
    assert "'set'" not in html


def test_opt_out_sends_nothing_on_either_channel(make_app: AppFactory) -> None:
    app = make_app(GPC="opt_out")
    html = thanks_page(app, {"Sec-GPC": "1"})
    assert queued(app) == []
    assert html == ""
    assert get_state(app).outbox.stats().skipped == {"gpc_opt_out": 1}


def test_ignore_sends_as_usual(make_app: AppFactory) -> None:
    app = make_app(GPC="ignore")
    html = thanks_page(app, {"Sec-GPC": "1"})
    [event] = queued(app)
    assert "opt_out_type" not in event.get("custom_data", {})
    assert "track" in html


@pytest.mark.parametrize(
    ("mode", "queued_count", "flagged"), [("ldp", 1, True), ("opt_out", 0, False)]
)
def test_a_beacon_reporting_gpc_gets_the_same_treatment(
    make_app: AppFactory, mode: str, queued_count: int, flagged: bool
) -> None:
    app = make_app(GPC=mode)
    response = app.test_client().post(
        "/dedupkit/events",
        data=json.dumps(
            {"event_name": "add_to_cart", "event_id": "e-1", "data": {"value": 1}, "gpc": 1}
        ),
        content_type="text/plain",
        headers={"User-Agent": CHROME_UA},
    )
    assert response.status_code == 202
    events = queued(app)
    assert len(events) == queued_count
    if flagged:
        assert events[0]["custom_data"]["opt_out_type"] == "LDP"
    else:
        assert response.json["status"] == "skipped: gpc_opt_out"


def test_head_tells_the_snippet_the_mode_and_the_hashed_region(make_app: AppFactory) -> None:
    app = make_app(GPC="ldp", **GEO)
    with app.test_request_context("/", headers=CALIFORNIA):
        html = render_template_string("{{ dedupkit.head() }}")
    assert 'data-gpc="ldp"' in html
    assert f'data-ldp-st="{sha256_hex("ca")}"' in html
    assert f'data-ldp-country="{sha256_hex("us")}"' in html
    # The HTML now depends on the region: caches must keep one copy per region.
    app.add_url_rule("/", "home", lambda: render_template_string("{{ dedupkit.head() }}"))
    response = app.test_client().get("/", headers=CALIFORNIA)
    assert {"CF-IPCountry", "X-Region"} <= set(response.vary)


def test_head_without_geo_headers_stays_the_same_for_everyone(app: Flask) -> None:
    with app.test_request_context("/", headers=CALIFORNIA):
        html = render_template_string("{{ dedupkit.head() }}")
    assert "data-ldp-st" not in html
    assert 'data-gpc="ldp"' in html


def test_an_unknown_mode_is_refused_at_start(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_GPC"):
        make_app(GPC="yes please")


# -- the consent hook -------------------------------------------------------------------------


def track_with_hook(make_app: AppFactory, hook: Any, cookie: str | None, **settings: Any) -> int:
    app = make_app(CONSENT=hook, **settings)
    headers = {"User-Agent": CHROME_UA}
    if cookie is not None:
        headers["Cookie"] = f"_dedupkit_consent={cookie}"
    with app.test_request_context("/", headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.1"}):
        kit_for(app).track("add_to_cart", value=1, currency="USD")
    return len(queued(app))


def test_the_hook_beats_the_cookie(make_app: AppFactory) -> None:
    assert track_with_hook(make_app, lambda request: False, "1") == 0
    assert track_with_hook(make_app, lambda request: True, "0", REQUIRE_CONSENT=True) == 1


def test_no_answer_leaves_it_to_the_cookie(make_app: AppFactory) -> None:
    assert track_with_hook(make_app, lambda request: None, "0") == 0


def test_a_broken_hook_falls_back_to_the_cookie_and_is_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(request: Request) -> bool:
        raise KeyError("jane@example.com")

    with caplog.at_level(logging.WARNING, logger="dedupkit"):
        assert track_with_hook(make_app, hook, "0") == 0
    assert "DEDUPKIT_CONSENT raised KeyError" in caplog.text
    assert "jane" not in caplog.text  # the exception's message may be PII


def test_the_hook_must_be_callable(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_CONSENT"):
        make_app(CONSENT="yes")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answer=st.one_of(st.booleans(), st.none(), st.integers(), st.text(max_size=5)),
    raises=st.booleans(),
    cookie=st.sampled_from([None, "0", "1", "maybe"]),
)
def test_the_hook_decides_exactly_when_it_answers_true_or_false(
    app: Flask, answer: object, raises: bool, cookie: str | None
) -> None:
    def hook(request: Request) -> object:
        if raises:
            raise RuntimeError("CMP down")
        return answer

    state = get_state(app)
    state.settings = dataclasses.replace(state.settings, consent=hook)  # type: ignore[misc, arg-type]
    headers = {"Cookie": f"_dedupkit_consent={cookie}"} if cookie else {}
    with app.test_request_context("/", headers=headers):
        consent = current_visitor(state).consent
    by_cookie = {"1": Consent.GRANTED, "0": Consent.DENIED}.get(cookie or "", Consent.UNKNOWN)
    if raises or answer is None or type(answer) is not bool:
        assert consent is by_cookie
    else:
        assert consent is (Consent.GRANTED if answer else Consent.DENIED)
