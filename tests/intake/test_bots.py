"""Bots by user agent: crawlers and HTTP libraries are not sent to CAPI; shoppers are.

These tests pin behaviour, family by family (issue 18's false positives and misses). How well
the filter generalises is measured on held-out labelled sets by bench/bots.py, not here.
"""

from __future__ import annotations

import json
import re
import time
from importlib.resources import files

import pytest

from dedupkit.intake.bots import (
    DROPPED_RULES,
    MAX_CHARS,
    compile_patterns,
    explain,
    is_bot,
    rule_sources,
    to_python,
    user_agent_family,
)


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


def test_the_compiled_lists_agree_with_their_regexes_on_both_corpora() -> None:
    plain = [to_python(p) for s in rule_sources() if not s.word_start for p in s.patterns]
    at_word = [to_python(p) for s in rule_sources() if s.word_start for p in s.patterns]
    union = re.compile(
        "|".join([*(f"(?:{p})" for p in plain), *(f"(?<![a-z0-9_\\-])(?:{p})" for p in at_word)])
    )
    matcher = compile_patterns(plain, at_word)
    texts = [t.lower()[:MAX_CHARS] for t in [*crawler_instances(), *browser_user_agents()]]

    disagree = [t for t in texts if matcher.matches(t) != bool(union.search(t))]

    assert disagree == []


# Issue 18: the false positives and misses of the list-built filter, family by family.

SHOPPERS: dict[str, str] = {
    "Facebook in-app, MetaIAB": (
        "Mozilla/5.0 (Linux; Android 16; Pixel 10 Pro XL Build/CP1A.260305.018; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/146.0.7680.174 "
        "Mobile Safari/537.36 MetaIAB Facebook"
    ),
    "Facebook in-app, iOS": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/468.0.0.43.107;FBBV/604361358;"
        "FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
    ),
    "Facebook in-app, Android on an OPPO build": (
        "Mozilla/5.0 (Linux; Android 15; CPH2653 Build/AP3A.240617.008; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/134.0.6998.92 "
        "Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/504.0.0.69.64;IABMV/1;]"
    ),
    "Instagram on OPPO, Android 15 AP3A.240617.008": (
        "Mozilla/5.0 (Linux; Android 15; CPH2591 Build/AP3A.240617.008; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 "
        "Mobile Safari/537.36 Instagram 361.0.0.46.88 Android (35/15; 480dpi; 1080x2412; "
        "OPPO; CPH2591; OP5961L1; qcom; en_US; 674675155)"
    ),
    "Instagram iOS": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Instagram 337.0.3.23.54 (iPhone14,5; iOS 17_5; "
        "en_US; en; scale=3.00; 1170x2532; 614293466)"
    ),
    "Chrome on realme, same build id": (
        "Mozilla/5.0 (Linux; Android 15; RMX3990 Build/AP3A.240617.008) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
    ),
    "TikTok": (
        "Mozilla/5.0 (Linux; Android 14; SM-A546B Build/UP1A.231005.007; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.193 "
        "Mobile Safari/537.36 trill_330204 JsSdk/1.0 NetType/WIFI Channel/googleplay "
        "AppName/trill app_version/33.2.4 ByteLocale/en ByteFullLocale/en Region/US "
        "Spark/1.4.6.3-bugfix AppVersion/33.2.4 BytedanceWebview/d8a21c6"
    ),
    "Snapchat": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Snapchat/13.0.0.40 (like Safari/8617.1.17, panda)"
    ),
    "LinkedIn": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.30.1035"
    ),
    "Line": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0"
    ),
    "WeChat": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003130) NetType/WIFI "
        "Language/zh_CN"
    ),
    "Pinterest iOS app": BROWSERS["Pinterest iOS app"],
    "Pinterest Android app": BROWSERS["Pinterest Android app"],
    "Sogou mobile browser": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_2 like Mac OS X) AppleWebKit/603.2.4 "
        "(KHTML, like Gecko) Version/4.0 Mobile Safari/534.30 "
        "SogouMSE,SogouMobileBrowser/3.7.4"
    ),
    "Blackboard app": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Blackboard/7.4"
    ),
    "HTC Butterfly": (
        "Mozilla/5.0 (Linux; Android 4.4.2; HTC Butterfly s Build/KOT49H) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/36.0.1985.131 Mobile Safari/537.36"
    ),
    "ViewSonic": (
        "Mozilla/5.0 (Linux; Android 4.0.4; ViewSonic ViewPad 10e Build/IMM76D) "
        "AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Safari/534.30"
    ),
    "Opera Mini, a build with 008/": (
        "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 "
        "Version/12.16 008/1.0"
    ),
    "Viber": (
        "Mozilla/5.0 (Linux; Android 7.1.2; G011A Build/N2G48H; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/66.0.3359.158 Safari/537.36 Viber/11.9.5.8"
    ),
    "VS Code": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Code/1.85.1 Chrome/114.0.5735.289 Electron/25.9.7 Safari/537.36"
    ),
}

MISSED_BOTS: dict[str, str] = {
    "StatoolsBot": "StatoolsBot (+http://www.statools.com/bot.html)",
    "ImplisenseBot": "ImplisenseBot 1.1",
    "og-scraper": "og-scraper/1.0.0",
    "Route53 health check": (
        "Amazon-Route53-Health-Check-Service (ref c96ad03c-acdf-48c6-8ec7-45806bf08123; "
        "report http://amzn.to/1vsZADi)"
    ),
    "ELB-HealthChecker": "ELB-HealthChecker/2.0",
    "DynatraceSynthetic": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 DynatraceSynthetic/1.0"
    ),
    "Feedly": "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 16 subscribers)",
    "Miniflux": "Miniflux/2.1.3 (+https://miniflux.app)",
    "Tiny Tiny RSS": "Tiny Tiny RSS/22.08 (Unsupported)",
    "NetNewsWire": "NetNewsWire (RSS Reader; https://netnewswire.com/)",
    "Overcast": "Overcast/1.0 Podcast Sync (123 subscribers; feed-id=456; +http://overcast.fm/)",
    "Pocket Casts": "PocketCasts/1.0 (Pocket Casts Feed Parser; +http://pocketcasts.com/)",
    "AppleCoreMedia": (
        "AppleCoreMedia/1.0.0.21A5248v (iPhone; U; CPU OS 17_0 like Mac OS X; en_us)"
    ),
    "FeedFetcher-Google": "FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)",
    "Bluesky Cardyb": "Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)",
    "SkypeURIPreview": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Nmap": "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan": "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "sqlmap": "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Nikto": "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
    "WPScan": "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "zgrab": "Mozilla/5.0 zgrab/0.x",
    "aiohttp": "Python/3.12 aiohttp/3.9.5",
    "libwww-perl": "libwww-perl/6.72",
    "node-fetch": "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Guzzle": "GuzzleHttp/7",
    "Wget": "Wget/1.21.4",
    "HTTPie": "HTTPie/3.2.2",
    "reqwest": "reqwest/0.11.27",
    "RestSharp": "RestSharp/110.2.0.0",
    "Deno": "Deno/1.40.0",
    "Flask's test client": "Werkzeug/3.1.3",
    "a contact URL": "Blahtool/2.1 (+https://example.org/about)",
    "a contact e-mail": "Blahtool/2.1 (admin@example.org)",
    "a browser's shape, a contact in the platform": (
        "Mozilla/5.0 (X11; Linux x86_64; +https://example.org/crawler) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    ),
    "Googlebot smartphone, a browser plus a bot's comment": BOTS["Googlebot smartphone"] or "",
    "Storebot in the platform": (
        "Mozilla/5.0 (X11; Linux x86_64; Storebot-Google/1.0) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/79.0.3945.88 Safari/537.36"
    ),
}


@pytest.mark.parametrize("user_agent", SHOPPERS.values(), ids=SHOPPERS.keys())
def test_social_in_app_browsers_current_builds_and_listed_lookalikes_are_shoppers(
    user_agent: str,
) -> None:
    assert is_bot(user_agent) is False, explain(user_agent)


@pytest.mark.parametrize("user_agent", MISSED_BOTS.values(), ids=MISSED_BOTS.keys())
def test_monitors_fetchers_scanners_libraries_and_contacts_are_bots(user_agent: str) -> None:
    assert is_bot(user_agent) is True, explain(user_agent)


def test_a_bot_word_in_any_casing_is_a_bot() -> None:
    for agent in ("ExampleBOT/1.0", "examplebot", "Example-Crawler 2", "SPIDERMAN-fetcher/1"):
        assert is_bot(agent) is True, agent


def test_an_unknown_token_after_a_browser_is_judged_by_the_rules_not_let_through() -> None:
    # The browser shape lets through only tokens browsers and in-app browsers send.
    chrome = BROWSERS["Chrome Windows"]
    assert is_bot(chrome + " HeadlessChrome/131.0.0.0") is True
    assert is_bot(chrome + " ExampleMonitor/2.0") is True
    assert is_bot(chrome) is False


def test_every_dropped_rule_is_one_its_list_has_and_is_left_out() -> None:
    # A dropped rule the list no longer has is a stale entry; one still compiled, a bug.
    crawler_list = files("crawleruseragents").joinpath("crawler-user-agents.json")
    raw = {
        "crawler-user-agents": {e["pattern"] for e in json.loads(crawler_list.read_text())},
        "isbot": set(
            json.loads(
                files("dedupkit.intake").joinpath("bot_rules").joinpath("isbot.json").read_text()
            )["patterns"]
        ),
    }
    kept = {s.name: set(s.patterns) for s in rule_sources()}
    for source, dropped in DROPPED_RULES.items():
        assert dropped <= raw[source], dropped - raw[source]
        assert not dropped & kept[source]


def test_rules_of_other_syntaxes_mean_the_same_in_python() -> None:
    # Python's look-behind takes one width; escapes keep their case.
    assert to_python("(?<!cu|power )bot\\D") == "(?<!cu)(?<!power )bot\\D"
    assert to_python("[\\w\\d-.]+X") == "[\\w\\d\\-.]+x"
    assert re.search(to_python("(?<! cu)BOT"), "a bot")
    assert not re.search(to_python("(?<! cu)BOT"), "a cubot")


def test_the_family_of_a_user_agent_ignores_its_versions() -> None:
    assert user_agent_family("curl/8.5.0") == user_agent_family("curl/8.11.1") == "curl/"
    assert user_agent_family("x" * 100_000) == "x" * 120
    assert user_agent_family(None) == ""


@pytest.mark.parametrize(
    "tail",
    [
        " " + "Browser" * 80,
        " SamsungBrowser/1" * 40,
        " Mobile Safari/1" * 40,
        " Instagram" * 60,
        " Chrome/1" * 50 + " Electron/1",
        " FBAN/x;FBAV/1" * 30,
        " (Facebook)" * 50,
        ("bo" + "Mozilla/5.0 (" * 3 + "crawle") * 10,
    ],
)
def test_a_crafted_user_agent_cannot_make_the_regex_engine_backtrack_for_long(tail: str) -> None:
    # Tokens with two spellings once let "Browser" * 22 take seconds, doubling with each
    # token; a linear matcher takes microseconds. One second is far from either.
    agent = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko)" + tail + " !"
    started = time.process_time()

    is_bot(agent * 3)

    assert time.process_time() - started < 1.0
    assert len(user_agent_family(agent * 100)) <= 120
