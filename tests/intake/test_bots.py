"""Bots by user agent: crawlers and HTTP libraries are not sent to CAPI; shoppers are.

Recall and false positives are measured over public corpora: the instances of the
``crawler-user-agents`` list and the real-browser user agents shipped by ``fake-useragent``.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files

import pytest

from dedupkit.intake.bots import EXTRA_PATTERNS, compile_patterns, corpus_patterns, is_bot


def crawler_instances() -> list[str]:
    data = files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8")
    return [ua for entry in json.loads(data) for ua in entry.get("instances", [])]


def browser_user_agents() -> list[str]:
    lines = files("fake_useragent").joinpath("data").joinpath("browsers.jsonl").read_text("utf-8")
    return sorted({json.loads(line)["useragent"] for line in lines.splitlines() if line})


BOTS: dict[str, str | None] = {
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Googlebot smartphone": (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    ),
    "bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "bingbot chromium": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
    ),
    "Pinterestbot": (
        "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)"
    ),
    "Pinterest 0.2": "Pinterest/0.2 (+http://www.pinterest.com/bot.html)",
    "facebookexternalhit": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "HeadlessChrome": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/131.0.0.0 Safari/537.36"
    ),
    "python-requests": "python-requests/2.32.3",
    "curl": "curl/8.5.0",
    "Go-http-client 1.1": "Go-http-client/1.1",
    "Go-http-client 2.0": "Go-http-client/2.0",
    "empty": "",
    "blank": "   ",
    "None": None,
}

BROWSERS: dict[str, str] = {
    "Chrome Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "Chrome macOS": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "Edge": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
    ),
    "Safari macOS": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.6 Safari/605.1.15"
    ),
    "Firefox Windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
    ),
    "Firefox Linux": (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    ),
    "Safari iPhone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
    ),
    "Safari iPad": (
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
    ),
    "Chrome iPhone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"
    ),
    "Chrome Android": (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
    ),
    "Firefox Android": "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "Samsung Internet": (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"
    ),
    "Pinterest iOS app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]"
    ),
    "Pinterest Android app": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 "
        "[Pinterest/Android]"
    ),
}


@pytest.mark.parametrize("user_agent", BOTS.values(), ids=BOTS.keys())
def test_crawlers_headless_browsers_http_libraries_and_no_user_agent_are_bots(
    user_agent: str | None,
) -> None:
    assert is_bot(user_agent) is True


@pytest.mark.parametrize("user_agent", BROWSERS.values(), ids=BROWSERS.keys())
def test_real_browsers_and_the_pinterest_in_app_browser_are_not_bots(user_agent: str) -> None:
    assert is_bot(user_agent) is False


def test_the_pinterest_app_is_told_apart_from_pinterests_crawler() -> None:
    # Both say "Pinterest"; only the in-app browser is a shopper.
    assert is_bot(BROWSERS["Pinterest iOS app"]) is False
    assert is_bot(BOTS["Pinterestbot"]) is True
    assert is_bot(BOTS["Pinterest 0.2"]) is True


def test_recall_on_the_crawler_user_agents_corpus_is_at_least_99_percent() -> None:
    instances = crawler_instances()
    missed = [ua for ua in instances if not is_bot(ua)]

    assert len(instances) > 1000
    assert len(missed) <= len(instances) // 100, missed[:20]


def test_no_real_browser_of_the_fake_useragent_corpus_is_a_bot() -> None:
    browsers = browser_user_agents()

    assert len(browsers) > 500
    assert [ua for ua in browsers if is_bot(ua)] == []


@pytest.mark.parametrize(
    "user_agent",
    [
        "Apache-HttpClient/4.5.14 (Java/17.0.9)",
        "AHC/2.1",
        "APIs-Google (+https://developers.google.com/webmasters/APIs-Google.html)",
        "Amazon CloudFront",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 (headless)",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
        "PhantomJS/2.1.1 Safari/538.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Cypress/13.6.0",
        "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
        "Java/17.0.2",
        "node",
        "undici",
        "PostmanRuntime/7.36.0",
        "insomnia/2023.5.8",
        "Dart/3.3 (dart:io)",
        "okhttp/4.12.0",
        "python-httpx/0.27.0",
        "Python-urllib/3.11",
        "axios/1.6.8",
        "Mozilla/5.0 (compatible; ExampleCrawler/1.0)",
        "example-spider/2.0",
        "Mozilla/5.0 (compatible; examplebot/0.1; +https://example.com/bot)",
    ],
)
def test_http_libraries_headless_browsers_and_unlisted_crawlers_are_bots(user_agent: str) -> None:
    assert is_bot(user_agent) is True


@pytest.mark.parametrize(
    "user_agent",
    [
        # "bot" inside a phone brand is not a bot.
        "Mozilla/5.0 (Linux; Android 12; Cubot Note 30) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        # The Pinterest app wins even when its user agent carries another app's token.
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
        "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 "
        "Mobile Safari/537.36 [Pinterest/Android]",
    ],
)
def test_shoppers_that_look_like_bots_to_a_naive_filter_are_not(user_agent: str) -> None:
    assert is_bot(user_agent) is False


def test_an_over_long_user_agent_is_classified_on_its_start() -> None:
    browser = BROWSERS["Chrome Windows"]

    assert is_bot(browser + " x" * 50_000) is False
    assert is_bot("curl/8.5.0 " + "x" * 100_000) is True


# The compiled matcher must match exactly what the union of its patterns matches.


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("Googlebot\\/", ["x Googlebot/2.1"], ["Googlebot 2.1", "googlebot/"]),
        ("[wW]get", ["Wget/1.21", "xwget"], ["WGET"]),
        ("AdsBot-Google([^-]|$)", ["AdsBot-Google", "AdsBot-Google (+http"], ["AdsBot-Google-M"]),
        ("^curl", ["curl/8.5"], ["x curl/8.5"]),
        ("(^| )sentry\\/", ["sentry/1.0", "x sentry/1.0"], ["xsentry/1.0"]),
        ("ab?c", ["ac", "abc"], ["abbc"]),
        ("Automaton|Newsify Feed Fetcher", ["x Automaton", "Newsify Feed Fetcher/1"], ["Newsify"]),
        (
            "GoogleAssociationService$",
            ["x GoogleAssociationService"],
            ["GoogleAssociationServiceX"],
        ),
        ("Spider[\\s\\S]*spider\\.com", ["Spider/1 (+spider.com)"], ["Spider/1"]),
        ("\\bzeta\\b", ["a zeta b"], ["azeta"]),
    ],
)
def test_a_compiled_pattern_matches_what_the_regex_matches(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    # Each pattern shares the tree with a longer and a shorter neighbour, as in the corpus.
    matcher = compile_patterns([pattern, "Googlebot/2\\.1", "Goo$"])

    for text in matching:
        assert re.search(pattern, text), text
        assert matcher.matches(text), text
    for text in not_matching:
        assert not re.search(pattern, text), text
        assert not matcher.matches(text), text


def test_no_pattern_matches_nothing() -> None:
    assert compile_patterns([]).matches("anything") is False


def test_the_compiled_corpus_agrees_with_the_corpus_regex_on_both_corpora() -> None:
    patterns = [*corpus_patterns(), *EXTRA_PATTERNS]
    union = re.compile("|".join(f"(?:{p})" for p in patterns))
    matcher = compile_patterns(patterns)
    texts = [*crawler_instances(), *browser_user_agents()]

    disagree = [t for t in texts if matcher.matches(t) != bool(union.search(t))]

    assert disagree == []
