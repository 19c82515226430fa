"""Tell crawlers, fetchers, monitors and HTTP libraries from shoppers, by user agent.

Bots render pages but run no tag, so sending their events to the API would inflate CAPI
against the tag; a shopper taken for a bot is worse, a conversion never sent. Three steps,
cheapest and surest first:

1. **A browser's shape is a shopper**: ``Mozilla/5.0 (platform) engine`` followed only by
   tokens browsers and in-app browsers send (``Chrome/…``, ``Mobile Safari/…``, Facebook's
   ``[FBAN/…]`` or ``MetaIAB Facebook``, ``Instagram …``, ``[Pinterest/iOS]``, TikTok's
   ``musical_ly_…``, ``MicroMessenger/…``), with a platform that names no bot, URL or address.
   Whatever a list says about ``Butterfly``, ``ViewSonic`` or a build id such as
   ``AP3A.240617.008``, such a user agent is a phone or a computer with a person behind it.
2. **General rules**, the kind that catch agents no list has seen yet: bot, crawl, spider,
   scan, fetch, check, monitor, preview, feed and podcast words in any casing; a URL or an
   e-mail address; HTTP-library, automation and tool tokens; no browser engine at all.
3. **Kept lists**, compiled once: ``crawler-user-agents`` (installed package), isbot's
   pattern and Matomo device-detector's bot rules (data files in ``dedupkit/intake/bot_rules/``,
   pinned, with their licenses).

Speed: the lists' ~2,800 regexes are mostly literals; they are merged into a prefix tree
entered at each literal's character rarest in browsers' user agents, and matched against the
lower-cased user agent (every list is case-insensitive there), so a never-seen user agent
costs a few µs; seen ones are answered from a bounded cache.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from importlib.resources import files
from typing import NamedTuple

#: Real user agents stay under a few hundred characters: only the start is classified, so an
#: attacker cannot make classification cost more.
MAX_CHARS = 512
#: Distinct user agents whose verdict is remembered (a few hundred bytes each).
CACHE_SIZE = 8192

# --- 1. The browser shape -------------------------------------------------------------------

# Tokens a browser or a known in-app browser appends after its engine, and nothing else.
# Each token has one spelling here, so a user agent splits into tokens one way only: with two
# ways per token ("Mobile Safari" as one token or two), a crafted user agent of many tokens
# would have exponentially many, and the regex engine would try them all.
_BROWSER_TOKENS = r"""
    Safari(?:/[\d.]+)?
  | Mobile(?:/\w+)?
  | Version/[\d.]+
  | (?:Chrome|CriOS|Chromium|Firefox|FxiOS|Focus|Klar|EdgiOS|EdgA|Edge?|OPR|OPT|OPiOS|OPX|Opera
      |YaApp_(?:iOS|Android)|Vivaldi|Brave|Whale|Silk|DuckDuckGo|Ddg|Ecosia|GSA|Quark
      |baiduboxapp|XiaoMi/MiuiBrowser|Puffin|PaleMoon|Waterfox|SeaMonkey|Iceweasel|Epiphany
      |Midori|Falkon|QtWebEngine|Kindle|NX|Instagram|Snapchat|Line|Twitter|Threads
      |MicroMessenger|WeChat|Weibo|NetType|Language|Process|ABI|Channel|AppName|app_version
      |ByteLocale|ByteFullLocale|Region|Spark|AppVersion|BytedanceWebview|TTWebView
      |JsSdk|WKWebView|Lark|LinkedInApp|KAKAOTALK|NAVER|DaumApps|Zalo|ZaloTheme
      |ZaloLanguage|Pinterest|musical_ly_\w+|trill_\w+|ultralite_\w+|GoogleApp
      |Viber|Electron|UWS|UCBS|FB[A-Z_]+|\w*Browser)(?:/[\w.\-+]*(?:\(0x\w+\))?)?
  | \[(?:FB|Pinterest/|LinkedInApp|Snapchat)[^\[\]]{0,300}\](?:/[\d.]+)?
  | SogouMSE,SogouMobileBrowser/[\d.]+
  | FBAN/\w+;FBAV/[^\s\[\]]{0,200}
  | MetaIAB\ (?:Facebook|Instagram|Messenger|Threads)
  | Instagram\ [\d.]+\ (?:Android|iOS|iPhone|iPad)?\ ?\([^()]{0,300}\)
  | Snapchat/[\d.]+\ \([^()]{0,100}\)
  | (?:Twitter\ for\ (?:iPhone|iPad|Android)|Pinterest\ for\ Android)(?:/[\d.]+)?
  | \(?(?:Facebook|Messenger)\)?
  | \(Ecosia\ [^()]{0,50}\)
"""

# A real platform: an operating system or device first, then anything without a bot's marks.
_PLATFORM = r"""
    (?:Windows|Macintosh|X11|Linux|Android|iPhone|iPad|iPod|CrOS|Ubuntu|Fedora|Tizen|KAIOS
      |Mobile|Tablet|TV|SMART-TV|SmartTV|Web0S|PlayStation|Nintendo|Xbox|BB10|BlackBerry
      |Windows\ Phone|OpenHarmony|HarmonyOS|U;|Maemo|MeeGo|Sailfish|FreeBSD|OpenBSD|NetBSD
      |SunOS|Fuchsia|VR|Quest|OculusBrowser)
    [^()]{0,250}
"""

_SHAPE = re.compile(
    rf"""
    Mozilla/5\.0\ \((?P<platform>{_PLATFORM})\)\ ?
    (?:
        AppleWebKit/[\d.]+\+?\ \(KHTML,?\ like\ Gecko\)
      | Gecko/[\d.]+
      | like\ Gecko
    )
    (?:\ [A-Za-z][\w\-]*/[\w.\-]+(?=\ Chrome/[\d.]+\ Electron/))?  # an Electron app's name
    (?:\ (?:{_BROWSER_TOKENS}))*
    [\s;]*\Z
    """,
    re.VERBOSE,
)


# --- 2. General rules -----------------------------------------------------------------------

# "bot" on its own: a bot's name, or a phone's ("Cubot", "M bot 51", "XBot Junior").
_BOT_WORD = r"(?<! cu)bots?(?:\b|_|\d)"

# Searched in the lower-cased user agent.
_GENERAL_RULES: tuple[str, ...] = (
    # Agents that say what they are.
    r"bot(?:/|-|;|\))",
    r"crawl",
    r"spider",
    r"scrap(?:er|ing|y)",
    r"(?<!cam)scan(?:ner|ning|\b)",
    r"fetch",
    r"check(?:er|ly|\b|-)",
    r"health-?check",
    r"monitor",
    r"uptime",
    r"synthetic",
    r"preview",
    r"(?:link|url|meta|og)[ _-]?(?:expander|unfurl|scraper|preview|parser|inspector)",
    r"\bfeed",
    r"\brss\b",
    r"podcast",
    r"archiv",
    r"validator",
    r"\bprobe\b",
    r"\bindexer",
    r"\blookup\b",
    r"\banalyz",
    # A contact: a URL or an e-mail address.
    r"https?:",
    r"www\.",
    r"\+https?",
    r"(?<=[a-z])\.(?:com|net|org|io|ai|htm|html|php)(?![.\w])",
    r"(?<=\w)@[a-z][\w-]*\.[a-z]{2,}",
    # Automated and headless browsers.
    r"headless",
    r"phantomjs",
    r"slimerjs",
    r"selenium",
    r"webdriver",
    r"puppeteer",
    r"playwright",
    r"lighthouse",
    r"cypress",
    r"\bptst\b",
    # Services that name themselves after their owner or as an agent.
    r"-google\b|\bgoogle-",
    r"(?<=[-_ ])agent\b",
    # Media players and podcast apps fetch files, they do not browse; a browser's user agent
    # may name the player a TV app plays video with (device-detector's browser fixtures).
    r"^(?!mozilla/).*?(?:applecoremedia|exoplayer|stagefright|itunes/|\bradio\b|gstreamer"
    r"|lavf/|ffmpeg|libmpv|\bvlc/|mplayer|winamp|\bnsplayer)",
    # HTTP libraries and command-line tools, at the start where they stand alone.
    r"^(?:curl|wget|java|python|go-http|go |okhttp|axios|node|undici|ruby|perl|php|libwww"
    r"|lwp|httpie|aiohttp|requests|urllib|guzzle|faraday|dart|deno|bun|reqwest|apache"
    r"|jakarta|postman|insomnia|powershell|winhttp|cpp-httplib|libcurl|http|got|superagent"
    r"|rest|typhoeus|mechanize|scrapy|hackney|finagle|akka|reactor|vert\.x|feign|unirest"
    r"|restsharp|test)(?:[/ _-]|$)",
    r"^mozilla(?:/[\d.]+)?$",
    r"(?:http|url)[ _-]?(?:client|lib|request|fetch|get)",
    r"\b(?:python|java|ruby|perl|php|golang|nodejs)[/-]\d",
)


# A browser engine, or a device or system an app runs on: a user agent with neither (a name
# and a version, say) is no shopper's.
_ENGINE_OR_DEVICE = re.compile(
    r"mozilla/|opera|applewebkit|gecko|trident|presto|khtml|midp|up\.browser|netfront"
    r"|obigo|openwave|blackberry|nokia|samsung|lge?-|sonyericsson|ucweb|dolfin|teleca"
    r"|jasmine|polaris|semc-browser|novarra|dorado|mot-|sec-|sie-|huawei|zte|alcatel|lenovo"
    r"|android|iphone|ipad|ipod|\bios\b|windows|macintosh|mac os|linux|darwin|cfnetwork"
    r"|dalvik|tizen|webos|kaios|playstation|nintendo|xbox|smart-?tv|hbbtv|roku|amiga|beos"
    r"|symbian|series ?[46]0|j2me|brew|maui|mre/|spreadtrum|mediatek|bada|palm|sailfish"
)


# --- 3. Kept lists --------------------------------------------------------------------------


class RuleSource(NamedTuple):
    """One kept list: where its rules come from and how they are written."""

    name: str
    patterns: tuple[str, ...]
    #: A rule matches only where a word starts (device-detector's rules say so).
    word_start: bool


#: Rules of the kept lists that match real browsers in the lists' own browser fixtures
#: (device-detector's and isbot's), by list: a phone brand, a build id, an app, a word a
#: browser may say. The general rules catch the bots these were written for.
DROPPED_RULES: dict[str, frozenset[str]] = {
    "crawler-user-agents": frozenset(
        {
            "Sonic",  # ViewSonic phones, Slack's "Sonic"
            "AP3A\\.240617\\.008",  # Android 15's build id on OPPO, realme, OnePlus, Infinix
            "Sogou",  # Sogou's mobile browser
            "Butterfly",  # HTC Butterfly
            "Fever",
            "Viber",
            "speedy",
            "NING\\/",
            "Expanse",
            "ds9",
            "008\\/",  # Opera Mini builds
            "Blackboard",  # the Blackboard app
            "Code\\/1\\.",  # VS Code
        }
    ),
    "isbot": frozenset(
        {
            "discovery",
            "catch",
            "sogou",
            "(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))",
            "(?:^|[^g])news(?!sapphire)",
            "radar",
            "manager",
            "chromeframe",
            "java(?!;)",
            "capture",
            "download",
            "proxy",
            "server",
            "virtuoso",
            "\\|",
            "^[^ ]{50,}$",
        }
    ),
}


def rule_sources() -> list[RuleSource]:
    """The kept lists, each as its package or data file ships it, less :data:`DROPPED_RULES`."""
    crawlers = files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8")
    return [
        _source(
            "crawler-user-agents",
            [entry["pattern"] for entry in json.loads(crawlers)],
            word_start=False,
        ),
        _source("isbot", _rule_file("isbot.json"), word_start=False),
        _source("device-detector", _rule_file("device-detector.json"), word_start=True),
    ]


def _source(name: str, patterns: list[str], *, word_start: bool) -> RuleSource:
    dropped = DROPPED_RULES.get(name, frozenset())
    return RuleSource(name, tuple(p for p in patterns if p not in dropped), word_start)


def _rule_file(name: str) -> list[str]:
    data = json.loads(
        files("dedupkit.intake").joinpath("bot_rules").joinpath(name).read_text("utf-8")
    )
    return list(data["patterns"])


def corpus_patterns() -> list[str]:
    """The ``pattern`` of every entry of the installed ``crawler-user-agents`` corpus."""
    return list(rule_sources()[0].patterns)


def to_python(pattern: str) -> str:
    """A JavaScript or PCRE rule of the kept lists in Python's syntax, lower-cased.

    Python's look-behind takes one fixed width, so ``(?<!cu|power )`` becomes
    ``(?<!cu)(?<!power )``; a ``-`` after a class escape in a character class is literal.
    Escapes keep their case: ``\\D`` is not ``\\d``.
    """
    pattern = _split_lookbehinds(pattern)
    # isbot's "\\b\\w+\\.ai": a word character before the dot is the same, without the
    # backtracking over every word.
    pattern = pattern.replace("\\b\\w+\\.", "(?<=\\w)\\.")
    pattern = re.sub(r"(\\[dws])-", r"\1\\-", pattern)
    return _lower_literals(pattern)


def _lower_literals(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append(pattern[i].lower())
        i += 1
    return "".join(out)


def _split_lookbehinds(pattern: str) -> str:
    """``(?<!a|bc)`` as ``(?<!a)(?<!bc)``, which means the same."""
    out: list[str] = []
    i = 0
    while (start := pattern.find("(?<!", i)) >= 0:
        end = _group_end(pattern, start)
        body = pattern[start + 4 : end]
        out.append(pattern[i:start])
        out.extend(f"(?<!{alt})" for alt in _split_alternatives(body))
        i = end + 1
    out.append(pattern[i:])
    return "".join(out)


def _structure(pattern: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """``(index, character, group depth after it)`` of each ``(``, ``)`` and ``|`` of
    ``pattern`` from ``start``, skipping escapes and character classes."""
    depth = 0
    in_class = False
    i = start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "()|":
            depth += 1 if char == "(" else -1 if char == ")" else 0
            yield i, char, depth
        i += 1


def _group_end(pattern: str, start: int) -> int:
    """The index of the ``)`` that closes the group opening at ``start``."""
    for i, char, depth in _structure(pattern, start):
        if char == ")" and depth == 0:
            return i
    return len(pattern) - 1


# --- The classifier -------------------------------------------------------------------------


def is_bot(user_agent: str | None) -> bool:
    """True for crawlers, fetchers, monitors, HTTP libraries (and no user agent at all)."""
    if not user_agent:
        return True
    return _classify(user_agent[:MAX_CHARS])


@functools.lru_cache(maxsize=CACHE_SIZE)
def _classify(agent: str) -> bool:
    if agent.isspace():
        return True
    shape = _SHAPE.match(agent)
    if shape is not None:
        return _PLATFORM_BOT.matches(shape["platform"].lower())
    lowered = agent.lower()
    return not _ENGINE_OR_DEVICE.search(lowered) or _RULES.matches(lowered)


_VERSION_LIKE = re.compile(r"[\d._]+")


def user_agent_family(user_agent: str | None) -> str:
    """``user_agent`` without its version numbers, bounded: ``curl/8.5.0`` is ``curl/``."""
    if not user_agent or user_agent.isspace():
        return ""
    return _VERSION_LIKE.sub("", user_agent[:MAX_CHARS])[:120]


def explain(user_agent: str | None) -> str:
    """Which step decided, for a report of a false positive: ``"browser shape"``, ..."""
    if not user_agent or user_agent.isspace():
        return "no user agent"
    agent = user_agent[:MAX_CHARS]
    shape = _SHAPE.match(agent)
    if shape is not None:
        platform = shape["platform"].lower()
        if rule := _first_rule(_PLATFORM_RULES, platform):
            return f"browser shape, but its platform matches {rule!r}"
        return "browser shape"
    lowered = agent.lower()
    if rule := _first_rule((_BOT_WORD, *_GENERAL_RULES), lowered):
        return f"general rule {rule!r}"
    if not _ENGINE_OR_DEVICE.search(lowered):
        return "no browser engine, device or system"
    for source, matcher in _source_matchers().items():
        if matcher.matches(lowered):
            return f"list: {source}"
    return "no rule"


class _Matcher(NamedTuple):
    """Three compiled regexes that together match exactly what the patterns match."""

    floating: re.Pattern[str]  # searched: patterns that may match anywhere
    anchored: re.Pattern[str]  # matched at position 0: patterns starting with ``^``
    rest: re.Pattern[str] | None  # searched: the few patterns with no literal start

    def matches(self, user_agent: str) -> bool:
        return bool(
            self.floating.search(user_agent)
            or self.anchored.match(user_agent)
            or (self.rest is not None and self.rest.search(user_agent))
        )


# A word starts here: the rule's first character follows no letter, digit, "_" or "-".
_WORD_START = r"(?<![a-z0-9_\-])"


def compile_patterns(patterns: Iterable[str], word_start: Iterable[str] = ()) -> _Matcher:
    """Compile regexes (Python syntax) into a matcher equivalent to their union.

    :param word_start: more regexes, each matching only where a word starts.
    """
    floating = _Trie()
    anchored = _Trie()
    rest: list[str] = []
    rest_at_start: list[str] = []
    pending = [(p, False) for p in patterns] + [(p, True) for p in word_start]
    while pending:
        pattern, at_word = pending.pop()
        for alternative in _split_alternatives(pattern):
            if at_word and alternative.startswith((_ANY_WORD_PREFIX, "[a-z0-9]*", ".*")):
                # "Where a word starts, then any word characters" is anywhere; so is
                # "then anything".
                for prefix in (_ANY_WORD_PREFIX, "[a-z0-9]*", ".*"):
                    alternative = alternative.removeprefix(prefix)
                at_word = False
            elif alternative.startswith(".+"):
                alternative = "(?<=[\\s\\S])" + alternative[2:]
                at_word = False
            if (spread := _spread_group(alternative)) is not None:
                pending.extend((branch, at_word) for branch in spread)
                continue
            behinds, body = _peel_lookbehinds(alternative)
            heads = _literal_heads(body)
            if heads is None:
                if alternative.startswith("^"):
                    rest_at_start.append(f"(?:{alternative})")
                else:
                    rest.append((_WORD_START if at_word else "") + f"(?:{alternative})")
                continue
            for is_anchored, literal, tail in heads:
                # The look-behinds that stood before the literal, checked after it.
                moved = "".join(f"{b[:-1]}{re.escape(literal)})" for b in behinds)
                full_tail = moved + (f"(?:{tail})" if tail else "")
                if is_anchored:  # tried at position 0 only: no need to enter elsewhere
                    anchored.add(literal, full_tail)
                    continue
                start = min(range(len(literal)), key=lambda i: (_BROWSER_CHARS[literal[i]], i))
                # Enter at the rare character; the look-behinds check the whole literal and
                # what stands before it.
                guard = f"(?<={re.escape(literal)})" if start else ""
                if at_word:
                    guard += f"(?<![a-z0-9_\\-][\\s\\S]{{{len(literal)}}})"
                floating.add(literal[start:], guard + full_tail)
    anchored_regex = anchored.regex()
    if rest_at_start:
        anchored_regex = "|".join([f"(?:{anchored_regex})", *rest_at_start])
    return _Matcher(
        floating=re.compile(floating.regex()),
        anchored=re.compile(anchored_regex),
        rest=re.compile("|".join(rest)) if rest else None,
    )


# device-detector's catch-all rule starts so; after a word start it means "anywhere".
_ANY_WORD_PREFIX = "[a-z0-9_-]*"


def _spread_group(pattern: str) -> list[str] | None:
    """``(?:a|b)c`` as ``["ac", "bc"]``, so each branch can enter the tree; else None."""
    if pattern.startswith("(?:"):
        body_start = 3
    elif pattern.startswith("(") and not pattern.startswith("(?"):
        body_start = 1  # a capturing group: nothing reads what it captured
    else:
        return None
    end = _group_end(pattern, 0)
    tail = pattern[end + 1 :]
    branches = _split_alternatives(pattern[body_start:end])
    if tail and tail[0] in _QUANTIFIERS:
        return None
    return [branch + tail for branch in branches]


def _peel_lookbehinds(pattern: str) -> tuple[list[str], str]:
    """Leading look-behinds (and ``\\b``) apart from the rest of ``pattern``.

    ``(?<!cam)scan`` gives ``["(?<!cam)"]`` and ``scan``; a leading ``\\b`` before a word
    character is ``(?<!\\w)``.
    """
    behinds: list[str] = []
    while True:
        if pattern.startswith("\\b") and (pattern[2:3].isalnum() or pattern[2:3] == "("):
            behinds.append("(?<!\\w)")
            pattern = pattern[2:]
        elif pattern.startswith(("(?<!", "(?<=")):
            end = _group_end(pattern, 0)
            if "|" in pattern[4:end]:
                return [], "(?!)"  # not literal: the caller keeps the whole pattern
            behinds.append(pattern[: end + 1])
            pattern = pattern[end + 1 :]
        else:
            return behinds, pattern


class _Trie:
    """Literals, each followed by a regex tail ("" when the literal is the whole match)."""

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.tails: set[str] = set()
        self.complete = False  # a pattern matches here: nothing deeper can add a match

    def add(self, literal: str, tail: str) -> None:
        node = self
        for char in literal:
            if node.complete:
                return
            node = node.children.setdefault(char, _Trie())
        if node.complete:
            return
        if tail:
            node.tails.add(tail)
        else:
            node.complete = True
            node.children.clear()
            node.tails.clear()

    def regex(self) -> str:
        # An empty tree must match nothing, not everything.
        return self._body() if self.children or self.tails else "(?!)"

    def _body(self) -> str:
        if self.complete:
            return ""
        branches = [re.escape(c) + child._body() for c, child in sorted(self.children.items())]
        branches += [f"(?:{tail})" for tail in sorted(self.tails)]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


# How often each character appears in browsers' user agents (a few typical ones, lower-cased):
# the tree is entered at characters rare here, so the regex engine can skip the others.
_BROWSER_CHARS = Counter(
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0 "
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1 "
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36 "
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:133.0) Gecko/20100101 Firefox/133.0 "
    "CriOS/131.0.6778.73 GSA/343.0.695551749".lower()
)
_META = frozenset(".^$*+?{}[]\\|()")
_QUANTIFIERS = frozenset("*+?{")
_MAX_VARIANTS = 32


def _split_alternatives(pattern: str) -> list[str]:
    """Split ``pattern`` on its top-level ``|`` (not inside groups or character classes)."""
    parts: list[str] = []
    start = 0
    for i, char, depth in _structure(pattern):
        if char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _literal_heads(pattern: str) -> list[tuple[bool, str, str]] | None:
    """``pattern`` as (anchored at the start, literal prefix, regex tail) variants.

    ``[wW]get`` gives ``wget`` and ``Wget``; ``(^| )PTST\\/`` gives an anchored ``PTST/`` and
    a floating `` PTST/``; ``AdsBot-Google([^-]|$)`` gives ``AdsBot-Google`` with that tail.
    None when the pattern has no literal start to index it by.
    """
    heads: list[tuple[bool, str]] = [(False, "")]
    i = 0
    if pattern.startswith("^"):
        heads = [(True, "")]
        i = 1
    while i < len(pattern):
        options, end = _read_atom(pattern, i)
        if options is None or (end < len(pattern) and pattern[end] in _QUANTIFIERS):
            break
        expanded: list[tuple[bool, str]] = []
        for anchored, literal in heads:
            for option in options:
                if option != "^":
                    expanded.append((anchored, literal + option))
                elif not literal:  # "^" inside a leading group, as in "(^| )sentry"
                    expanded.append((True, ""))
                else:
                    return None
        if len(expanded) > _MAX_VARIANTS:
            break
        heads = expanded
        i = end
    if any(not literal for _, literal in heads):
        return None
    return [(anchored, literal, pattern[i:]) for anchored, literal in heads]


def _read_atom(pattern: str, i: int) -> tuple[list[str] | None, int]:
    """The literal strings the atom at ``i`` can match and where it ends; None if not literal."""
    char = pattern[i]
    if char == "\\":
        escaped = pattern[i + 1 : i + 2]
        if escaped and not escaped.isalnum():
            return [escaped], i + 2
        return None, i
    if char == "[":
        end = pattern.find("]", i + 1)
        members = pattern[i + 1 : end]
        if end < 0 or not members or members[0] == "^" or any(c in "\\-[" for c in members):
            return None, i
        return sorted(set(members)), end + 1
    if char == "(":
        end = pattern.find(")", i + 1)
        body = pattern[i + 1 : end]
        body = body.removeprefix("?:")
        options = body.split("|")
        if end < 0 or any(o != "^" and (not o or any(c in _META for c in o)) for o in options):
            return None, i
        return options, end + 1
    if char in _META:
        return None, i
    return [char], i + 1


def _compile_sources(sources: list[RuleSource]) -> dict[str, _Matcher]:
    return {
        source.name: compile_patterns(
            () if source.word_start else map(to_python, source.patterns),
            map(to_python, source.patterns) if source.word_start else (),
        )
        for source in sources
    }


def _compile_all(sources: list[RuleSource], general: Iterable[str]) -> _Matcher:
    plain = [to_python(p) for s in sources if not s.word_start for p in s.patterns]
    at_word = [to_python(p) for s in sources if s.word_start for p in s.patterns]
    return compile_patterns([*general, *plain], at_word)


def _first_rule(rules: Iterable[str], text: str) -> str | None:
    return next((rule for rule in rules if re.search(rule, text)), None)


# What no real platform comment contains: what the general rules look for, or "compatible;"
# (a bot's "(compatible; examplebot/1.0)"); a phone's model may say "bot" ("Cubot", "M bot 51").
_PLATFORM_RULES = (*_GENERAL_RULES, "compatible;")

# Compiled at import (~0.3 s of CPU), not on first use: that would be some shopper's request.
_PLATFORM_BOT = compile_patterns(_PLATFORM_RULES)
_SOURCES = rule_sources()
# The general rules and every list in one tree: one scan of the user agent.
_RULES = _compile_all(_SOURCES, (_BOT_WORD, *_GENERAL_RULES))
# One matcher per list, for explain() only: compiled when first asked.
_SOURCE_MATCHERS: dict[str, _Matcher] = {}


def _source_matchers() -> dict[str, _Matcher]:
    if not _SOURCE_MATCHERS:
        _SOURCE_MATCHERS.update(_compile_sources(_SOURCES))
    return _SOURCE_MATCHERS
