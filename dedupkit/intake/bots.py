"""Tell crawlers, headless browsers and HTTP libraries from shoppers, by user agent.

Bots render pages but run no tag, so sending their events to the API would inflate CAPI
against the tag. The list of crawlers is the maintained ``crawler-user-agents`` corpus (the one
the JS ``isbot`` builds on), plus the headless browsers and HTTP libraries it does not spell
out. The Pinterest in-app browser is a shopper, although generic bot lists have flagged it
(omrilotan/isbot#27).

Speed: the corpus's ~1,500 patterns joined with ``|`` cost ~500 µs per user agent, because
the regex engine tries every branch at every position. They are mostly literals, so they are
merged into a prefix tree (one branch per character, then per next character, and so on) and
compiled once. Each literal enters the tree at its character rarest in browsers' user agents
(``Googlebot/`` as ``gbot/`` followed by a look-behind for the whole literal), so the engine
skips most positions of a browser's user agent without trying any branch: a never-seen user
agent is classified in ~3-5 µs, with no cache.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from importlib.resources import files
from typing import NamedTuple

# Agents the corpus does not name (in every spelling), written in its syntax: case-sensitive
# regexes, searched anywhere in the user agent.
EXTRA_PATTERNS: tuple[str, ...] = (
    # Headless and automated browsers.
    "[Hh]eadless",
    "[Pp]laywright",
    "[Pp]uppeteer",
    "[Ss]elenium",
    "[Ww]eb[Dd]river",
    "Lighthouse",
    "Cypress/",
    # HTTP libraries and API clients.
    "^Java/",
    "^node$",
    "undici",
    "PostmanRuntime/",
    "[Ii]nsomnia/",
    "^Dart/",
    "^Deno/",
    "^Bun/",
    "^reqwest/",
    "GuzzleHttp/",
    "^Faraday ",
    "^Ruby",
    "WinHttp",
    # Crawlers too small to be listed usually still say what they are.
    "[Cc]rawler",
    "CRAWLER",
    "[Ss]pider",
    "SPIDER",
    # "...bot/1.0", "(compatible; examplebot)", but not a phone brand such as "Cubot X19".
    "[Bb]ot[/;)@]",
    "[Bb]ot$",
)

# The Pinterest app's in-app browser appends one of these; it is a shopper.
_PINTEREST_APP = ("[Pinterest/iOS]", "[Pinterest/Android]")
# Real user agents stay under a few hundred characters: bound the work an attacker can ask for.
_MAX_CHARS = 1024


def is_bot(user_agent: str | None) -> bool:
    """True for crawlers, headless browsers and HTTP libraries (and no user agent at all)."""
    if not user_agent:
        return True
    agent = user_agent[:_MAX_CHARS]
    if agent.isspace():
        return True
    if _PINTEREST_APP[0] in agent or _PINTEREST_APP[1] in agent:
        return False
    return _MATCHER.matches(agent)


def corpus_patterns() -> list[str]:
    """The ``pattern`` of every entry of the installed ``crawler-user-agents`` corpus."""
    data = files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8")
    return [entry["pattern"] for entry in json.loads(data)]


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


def compile_patterns(patterns: Iterable[str]) -> _Matcher:
    """Compile regexes (Python syntax, case-sensitive) into a matcher equivalent to their union."""
    floating = _Trie()
    anchored = _Trie()
    rest: list[str] = []
    for pattern in patterns:
        for alternative in _split_alternatives(pattern):
            heads = _literal_heads(alternative)
            if heads is None:
                rest.append(alternative)
                continue
            for is_anchored, literal, tail in heads:
                if is_anchored:  # tried at position 0 only: no need to enter elsewhere
                    anchored.add(literal, tail)
                    continue
                start = min(range(len(literal)), key=lambda i: (_BROWSER_CHARS[literal[i]], i))
                # Enter at the rare character; the look-behind checks the whole literal.
                guard = f"(?<={re.escape(literal)})" if start else ""
                floating.add(literal[start:], guard + (f"(?:{tail})" if tail else ""))
    return _Matcher(
        floating=re.compile(floating.regex()),
        anchored=re.compile(anchored.regex()),
        rest=re.compile("|".join(f"(?:{p})" for p in rest)) if rest else None,
    )


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


# How often each character appears in browsers' user agents (a few typical ones): the tree
# is entered at characters rare here, so the regex engine can skip the others.
_BROWSER_CHARS = Counter(
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0 "
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1 "
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36 "
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:133.0) Gecko/20100101 Firefox/133.0 "
    "CriOS/131.0.6778.73 GSA/343.0.695551749"
)
_META = frozenset(".^$*+?{}[]\\|()")
_QUANTIFIERS = frozenset("*+?{")
_MAX_VARIANTS = 32


def _split_alternatives(pattern: str) -> list[str]:
    """Split ``pattern`` on its top-level ``|`` (not inside groups or character classes)."""
    parts: list[str] = []
    depth = 0
    in_class = False
    start = i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
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


# Compiled at import (~0.1 s), not on first use: that would be some shopper's request.
_MATCHER = compile_patterns([*corpus_patterns(), *EXTRA_PATTERNS])
