"""Event names: every accepted spelling resolves to one CAPI name and one tag name."""

from __future__ import annotations

import pytest

from dedupkit.errors import InvalidEvent, UnknownEventName
from dedupkit.event.names import STANDARD, TAG_NAMES, EventName, EventNames

#: pinterest.md §3.1 (the 15 names of the 5.23 spec plus the 7 of Pinterest's own GTM template)
#: and §11 (the tag spelling of each; ``None`` where the tag cannot send the event).
EXPECTED_TAG_NAMES: dict[str, str | None] = {
    "add_payment_info": "addpaymentinfo",
    "add_to_cart": "addtocart",
    "add_to_wishlist": "addtowishlist",
    "app_install": None,
    "app_open": None,
    "checkout": "checkout",
    "contact": "contact",
    "custom": "custom",
    "customize_product": "customizeproduct",
    "find_location": "findlocation",
    "initiate_checkout": "initiatecheckout",
    "lead": "lead",
    "page_visit": "pagevisit",
    "schedule": "schedule",
    "search": "search",
    "signup": "signup",
    "start_trial": "starttrial",
    "submit_application": "submitapplication",
    "subscribe": "subscribe",
    "view_category": "viewcategory",
    "view_content": "viewcontent",
    "watch_video": "watchvideo",
}

#: Spellings seen in Pinterest's docs, its own integrations and third-party code (§8.2, §11).
SPELLINGS: list[tuple[str, str]] = [
    ("AddToCart", "add_to_cart"),
    ("addtocart", "add_to_cart"),
    ("Addtocart", "add_to_cart"),
    ("add_to_cart", "add_to_cart"),
    ("ADD_TO_CART", "add_to_cart"),
    ("add-to-cart", "add_to_cart"),
    ("Add To Cart", "add_to_cart"),
    (" Checkout ", "checkout"),
    ("CHECKOUT", "checkout"),
    ("\tcheckout\n", "checkout"),
    ("SignUp", "signup"),
    ("Signup", "signup"),
    ("sign_up", "signup"),
    ("AddToWishList", "add_to_wishlist"),
    ("AddToWishlist", "add_to_wishlist"),
    ("PageVisit", "page_visit"),
    ("Pagevisit", "page_visit"),
    ("viewcontent", "view_content"),
    ("ViewContent", "view_content"),
    ("ViewCategory", "view_category"),
    ("Viewcategory", "view_category"),
    ("WatchVideo", "watch_video"),
    ("Watchvideo", "watch_video"),
    ("AddPaymentInfo", "add_payment_info"),
    ("InitiateCheckout", "initiate_checkout"),
    ("Contact", "contact"),
    ("Lead", "lead"),
    ("Search", "search"),
    ("Subscribe", "subscribe"),
    ("Schedule", "schedule"),
    ("StartTrial", "start_trial"),
    ("SubmitApplication", "submit_application"),
    ("FindLocation", "find_location"),
    ("CustomizeProduct", "customize_product"),
    ("custom", "custom"),
    ("Custom", "custom"),
    ("AppInstall", "app_install"),
    ("AppOpen", "app_open"),
    # Every CAPI spelling and every tag spelling of the table resolves too.
    *((capi, capi) for capi in EXPECTED_TAG_NAMES),
    *((tag, capi) for capi, tag in EXPECTED_TAG_NAMES.items() if tag),
]

UNKNOWN_NAMES = ["purchase", "Purchase", "add_to_bag", "AddToCarts", "view_item", "page", "x"]


def test_the_name_table_is_exactly_the_documented_one() -> None:
    assert dict(TAG_NAMES) == EXPECTED_TAG_NAMES


@pytest.mark.parametrize(("spelling", "capi"), SPELLINGS)
def test_every_spelling_resolves_to_its_capi_and_tag_name(spelling: str, capi: str) -> None:
    resolved = STANDARD.resolve(spelling)

    assert resolved == EventName(capi, EXPECTED_TAG_NAMES[capi])
    assert resolved.advertiser_defined is False
    assert STANDARD.capi_name(spelling) == capi


@pytest.mark.parametrize("capi", sorted(EXPECTED_TAG_NAMES))
def test_the_tag_name_resolves_back_to_the_same_capi_name(capi: str) -> None:
    tag = STANDARD.resolve(capi).tag
    if tag is not None:
        assert STANDARD.resolve(tag).capi == capi
        # The lowercase forms of the spec's AudienceRule.event are the safe tag spelling (§8.2).
        assert tag == tag.lower()
        assert tag.isalpha()


@pytest.mark.parametrize("name", ["app_install", "app_open", "AppInstall", "APP_OPEN"])
def test_app_only_events_have_no_tag_name(name: str) -> None:
    resolved = STANDARD.resolve(name)

    assert resolved.tag is None
    assert resolved.capi in {"app_install", "app_open"}


@pytest.mark.parametrize("name", UNKNOWN_NAMES)
def test_an_unknown_name_raises_an_error_that_names_it(name: str) -> None:
    with pytest.raises(UnknownEventName) as info:
        STANDARD.resolve(name)

    assert name in str(info.value)
    # Callers may catch the broad categories.
    assert isinstance(info.value, InvalidEvent)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["", "   ", None, 42])
def test_an_empty_or_non_string_name_is_unknown(name: object) -> None:
    with pytest.raises(UnknownEventName):
        STANDARD.resolve(name)  # type: ignore[arg-type]


@pytest.fixture
def with_ade() -> EventNames:
    return EventNames(advertiser_defined=["BookDemo", "Quote Request"])


@pytest.mark.parametrize("name", ["BookDemo", "Quote Request"])
def test_an_advertiser_defined_name_passes_unchanged_on_both_channels(
    with_ade: EventNames, name: str
) -> None:
    resolved = with_ade.resolve(name)

    assert resolved == EventName(name, name, advertiser_defined=True)


@pytest.mark.parametrize("name", ["bookdemo", "BOOKDEMO", "book_demo", "Book Demo", "QuoteRequest"])
def test_an_advertiser_defined_name_is_matched_exactly(with_ade: EventNames, name: str) -> None:
    # Pinterest requires advertiser-defined names to match exactly (§3.1, [D-ADE]).
    with pytest.raises(UnknownEventName, match=name):
        with_ade.resolve(name)


@pytest.mark.parametrize(("spelling", "capi"), [("AddToCart", "add_to_cart"), ("SignUp", "signup")])
def test_standard_names_still_resolve_next_to_advertiser_defined_ones(
    with_ade: EventNames, spelling: str, capi: str
) -> None:
    assert with_ade.resolve(spelling) == EventName(capi, EXPECTED_TAG_NAMES[capi])


def test_an_advertiser_defined_name_is_unknown_to_a_resolver_without_it() -> None:
    with pytest.raises(UnknownEventName, match="BookDemo"):
        STANDARD.resolve("BookDemo")


def test_a_resolved_name_is_not_looked_up_again() -> None:
    resolved = EventNames().resolve("AddToCart")
    assert EventNames().resolve(resolved) is resolved


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("purchase", "checkout"),
        ("Purchase", "checkout"),
        ("begin_checkout", "initiate_checkout"),
        ("CompleteRegistration", "signup"),
        ("generate_lead", "lead"),
        ("add_to_crat", "add_to_cart"),
    ],
)
def test_another_platforms_name_or_a_typo_suggests_the_pinterest_name(
    name: str, suggested: str
) -> None:
    with pytest.raises(UnknownEventName) as caught:
        STANDARD.resolve(name)
    assert f"did you mean {suggested!r}?" in str(caught.value)


def test_an_unlike_name_suggests_nothing_and_purchase_may_still_be_advertiser_defined() -> None:
    with pytest.raises(UnknownEventName) as caught:
        STANDARD.resolve("refund_issued")
    assert "did you mean" not in str(caught.value)
    assert EventNames(["purchase"]).resolve("purchase").capi == "purchase"
