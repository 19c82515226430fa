"""The bot filter on labelled user agents it was not built from, next to isbot and Crawler-Detect.

Sets (bench/data/ua-*.tsv.xz, rebuilt by build_bot_corpus.py; crawler-user-agents' examples
come from its installed package). A set whose project also supplies one of dedupkit's rule
lists is *seen*: the list was written against those examples, so its figures flatter. The
held-out sets are the verdict.

Real browsers are the user agents a set labels a browser or device that start ``Mozilla/`` or
``Opera``, as every browser that can run the Pinterest tag does; the set's other non-bot
clients (apps' HTTP stacks, feature phones, media players) are counted apart.

Prints one table: recall on bots and false positives on real browsers, per set and per
classifier, the social in-app and current Android rows, and µs per never-seen user agent
(CPU time). Says which of issue 18's targets dedupkit misses; ``--strict`` exits 1 then.
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from dedupkit.intake import bots

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"

#: Set -> the dedupkit rule list its project supplies (None: held out).
RULE_SOURCE_OF_SET: dict[str, str | None] = {
    "crawler-detect": None,
    "uap-core": None,
    "ua-parser-js": None,
    "isbot": "isbot (pattern)",
    "device-detector": "device-detector (regexes/bots.yml)",
    "crawler-user-agents": "crawler-user-agents (patterns)",
}

# Targets of issue 18, on the held-out sets.
RECALL_TARGET = 0.95
FALSE_POSITIVE_TARGET = 0.0001
MICROSECONDS_TARGET = 10.0

SOCIAL_IN_APP = re.compile(
    r"FBAN|FBAV|FB_IAB|MetaIAB|Instagram|Pinterest/|\[Pinterest|musical_ly|TikTok|trill_"
    r"|BytedanceWebview|Snapchat|LinkedInApp|\bLine/|MicroMessenger|WeChat|Twitter for"
)
# Android 12 and later, with the build id current phones send.
CURRENT_ANDROID = re.compile(r"Android 1[2-9]\b.*Build/[A-Z0-9]{4}\.\d{6}\.\d{3}")


@dataclass
class LabelledSet:
    name: str
    bots: list[str]
    browsers: list[str]
    others: list[str]

    @property
    def held_out(self) -> bool:
        return RULE_SOURCE_OF_SET[self.name] is None


def is_real_browser(user_agent: str) -> bool:
    return user_agent.startswith(("Mozilla/", "Opera"))


def load_sets() -> list[LabelledSet]:
    sets = []
    for path in sorted(DATA.glob("ua-*.tsv.xz")):
        name = path.name.removeprefix("ua-").removesuffix(".tsv.xz")
        rows = [
            line.split("\t", 1) for line in lzma.decompress(path.read_bytes()).decode().splitlines()
        ]
        labelled = [ua for label, ua in rows if label == "browser"]
        sets.append(
            LabelledSet(
                name,
                bots=[ua for label, ua in rows if label == "bot"],
                browsers=[ua for ua in labelled if is_real_browser(ua)],
                others=[ua for ua in labelled if not is_real_browser(ua)],
            )
        )
    corpus = files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8")
    instances = sorted({ua for entry in json.loads(corpus) for ua in entry.get("instances", [])})
    sets.append(LabelledSet("crawler-user-agents", instances, [], []))
    return sets


# --- Classifiers: each takes every user agent at once, returns verdicts and µs per agent ---


Verdicts = tuple[list[bool], float]


def run_dedupkit(agents: Sequence[str]) -> Verdicts:
    bots._classify.cache_clear()
    start = time.process_time()
    verdicts = [bots.is_bot(ua) for ua in agents]
    elapsed = time.process_time() - start
    return verdicts, elapsed / len(agents) * 1e6


_ISBOT_JS = """
const { isbot } = require("isbot");
const agents = JSON.parse(require("fs").readFileSync(0, "utf8"));
const start = process.cpuUsage();
const verdicts = agents.map((ua) => isbot(ua));
const used = process.cpuUsage(start);
process.stdout.write(JSON.stringify({ verdicts, us: (used.user + used.system) / agents.length }));
"""

_CRAWLERDETECT_PY = """
import json, sys, time
from crawlerdetect import CrawlerDetect
agents = json.load(sys.stdin)
detect = CrawlerDetect()
start = time.process_time()
verdicts = [bool(detect.isCrawler(ua)) for ua in agents]
us = (time.process_time() - start) / len(agents) * 1e6
json.dump({"verdicts": verdicts, "us": us}, sys.stdout)
"""


def _worker(command: list[str], agents: Sequence[str]) -> Verdicts | None:
    try:
        done = subprocess.run(
            command,
            input=json.dumps(list(agents)),
            capture_output=True,
            text=True,
            check=True,
            cwd=BENCH,  # node resolves bench/node_modules from here
        )
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"  ({command[0]} failed: {error})", file=sys.stderr)
        return None
    result = json.loads(done.stdout)
    return [bool(v) for v in result["verdicts"]], float(result["us"])


def run_isbot(agents: Sequence[str]) -> Verdicts | None:
    if not (BENCH / "node_modules" / "isbot").is_dir():
        print("  isbot: run `npm install --prefix bench` first; row skipped", file=sys.stderr)
        return None
    return _worker(["node", "-e", _ISBOT_JS], agents)


def run_crawlerdetect(agents: Sequence[str], python: str) -> Verdicts | None:
    return _worker([python, "-c", _CRAWLERDETECT_PY], agents)


# --- The table --------------------------------------------------------------------------------


def percent(part: int, whole: int, digits: int = 2) -> str:
    return f"{part / whole:.{digits}%}" if whole else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_python = BENCH / ".venv" / "bin" / "python"
    parser.add_argument("--crawlerdetect-python", default=str(default_python))
    parser.add_argument("--show", type=int, default=0, help="print N misses and false positives")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    sets = load_sets()
    agents = sorted({ua for s in sets for ua in (*s.bots, *s.browsers, *s.others)})
    print(f"{len(agents)} distinct user agents in {len(sets)} sets", file=sys.stderr)
    classifiers: dict[str, Callable[[Sequence[str]], Verdicts | None]] = {
        "dedupkit": run_dedupkit,
        "isbot": run_isbot,
        "Crawler-Detect": lambda a: run_crawlerdetect(a, args.crawlerdetect_python),
    }
    verdicts: dict[str, dict[str, bool]] = {}
    speed: dict[str, float] = {}
    for name, run in classifiers.items():
        result = run(agents)
        if result is None:
            continue
        verdicts[name] = dict(zip(agents, result[0], strict=True))
        speed[name] = result[1]

    names = list(verdicts)
    print()
    print("Recall on bots / false positives on real browsers, per set (seen: dedupkit's rules")
    print("come from that project, so its figures flatter; held out: the verdict)")
    print()
    header = f"{'set':<21} {'':<8} {'bots':>6} {'browsers':>8}"
    for name in names:
        header += f" | {name + ' recall':>17} {'FP':>12}"
    print(header)
    print("-" * len(header))

    def row(label: str, kind: str, bot_set: list[str], browser_set: list[str]) -> None:
        line = f"{label:<21} {kind:<8} {len(bot_set):>6} {len(browser_set):>8}"
        for name in names:
            v = verdicts[name]
            caught = sum(v[ua] for ua in bot_set)
            flagged = sum(v[ua] for ua in browser_set)
            fp = f"{flagged} ({percent(flagged, len(browser_set), 3)})" if browser_set else "-"
            line += f" | {percent(caught, len(bot_set)):>17} {fp:>12}"
        print(line)

    held = [s for s in sets if s.held_out]
    seen = [s for s in sets if not s.held_out]
    for s in held:
        row(s.name, "held out", s.bots, s.browsers)
    all_held_bots = [ua for s in held for ua in s.bots]
    all_held_browsers = [ua for s in held for ua in s.browsers]
    row("all held out", "", all_held_bots, all_held_browsers)
    for s in seen:
        row(s.name, "seen", s.bots, s.browsers)
    every_browser = sorted({ua for s in sets for ua in s.browsers})
    row("all real browsers", "", [], every_browser)
    social = [ua for ua in every_browser if SOCIAL_IN_APP.search(ua)]
    android = [ua for ua in every_browser if CURRENT_ANDROID.search(ua)]
    row("social in-app", "browsers", [], social)
    row("Android 12+ builds", "browsers", [], android)
    others = sorted({ua for s in sets for ua in s.others})
    row("other non-bot clients", "(info)", [], others)
    print()
    print("µs per never-seen user agent: " + ", ".join(f"{n} {speed[n]:.1f}" for n in names))
    print(f"  (dedupkit's cache holds {bots.CACHE_SIZE} user agents; a seen one costs a lookup)")
    print(
        "Rule sources: "
        + "; ".join(f"{v} <- set {k}" for k, v in RULE_SOURCE_OF_SET.items() if v is not None)
    )

    ours = verdicts["dedupkit"]
    if args.show:
        for ua in [ua for ua in all_held_bots if not ours[ua]][: args.show]:
            print("  missed:", ua[:160])
        for ua in [ua for ua in every_browser if ours[ua]][: args.show]:
            print("  false positive:", bots.explain(ua), "|", ua[:160])

    recall = sum(ours[ua] for ua in all_held_bots) / len(all_held_bots)
    false_positives = sum(ours[ua] for ua in every_browser) / len(every_browser)
    failures = []
    if recall < RECALL_TARGET:
        failures.append(f"recall on held-out bots {recall:.2%} < {RECALL_TARGET:.0%}")
    if false_positives > FALSE_POSITIVE_TARGET:
        failures.append(f"false positives {false_positives:.3%} > {FALSE_POSITIVE_TARGET:.2%}")
    if any(ours[ua] for ua in social) or any(ours[ua] for ua in android):
        failures.append("a social in-app browser or a current Android build is taken for a bot")
    if speed["dedupkit"] > MICROSECONDS_TARGET:
        failures.append(f"{speed['dedupkit']:.1f} µs per user agent > {MICROSECONDS_TARGET}")
    for failure in failures:
        print("TARGET MISSED:", failure)
    return 1 if failures and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
