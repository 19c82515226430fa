"""Rebuild ``bench/data/ua-*.tsv.xz``, the labelled user agents ``bench/bots.py`` scores on.

Run by hand, rarely: it reads git snapshots of the public repositories below (``--mirrors``,
one ``owner+name/repo`` git directory each, no work tree), pinned to the commits in
:data:`SOURCES`, and writes one file per set, ``label<TAB>user agent`` per line, deduplicated
within a label. Each file keeps the license of the set it came from (bench/data/SOURCES.md);
none of them is shipped in the package.

Labels are the set's own: what the set calls a crawler, fetcher, library or spider is a bot,
what it calls a browser or a device is a browser. A user agent labelled a bot by any set is
dropped from every set's browsers, so no user agent is both.
"""

from __future__ import annotations

import argparse
import json
import lzma
import subprocess
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parent / "data"

#: Set -> (repository, pinned commit, license).
SOURCES = {
    "crawler-detect": (
        "JayBizzle/Crawler-Detect",
        "f7926d40cb01c8f2488467dc0b476fd12d0359a8",
        "MIT",
    ),
    "uap-core": ("ua-parser/uap-core", "e3c5e634bee0b14f1a129c991483910739ad9f6c", "Apache-2.0"),
    "ua-parser-js": (
        "faisalman/ua-parser-js",
        "18d39b53dd803710cb8e76856d18c1dcf7533d11",
        "AGPL-3.0",
    ),
    "device-detector": (
        "matomo-org/device-detector",
        "3856a28692d45317d3f15f6f81ca31a06067182a",
        "LGPL-3.0-or-later",
    ),
    "isbot": ("omrilotan/isbot", "344052da664bde49579e21f1e62349280791efb3", "Unlicense"),
}


#: Browser names ua-parser-js gives automation tools: they never shop.
AUTOMATION = frozenset({"Chrome Headless", "Headless Chrome", "HeadlessChrome", "PhantomJS"})


class Repo:
    def __init__(self, mirrors: Path, name: str) -> None:
        repo, self.commit, _ = SOURCES[name]
        self.git_dir = mirrors / repo.replace("/", "+") / "repo"

    def paths(self, under: str) -> list[str]:
        out = self._git("ls-tree", "-r", "--name-only", self.commit, under)
        return out.splitlines()

    def read(self, path: str) -> str:
        return self._git("show", f"{self.commit}:{path}")

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def load_yaml(text: str) -> object:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def crawler_detect(repo: Repo) -> tuple[list[str], list[str]]:
    # Its browsers (tests/data/user_agent/devices.txt) are not in the snapshot: bots only.
    return repo.read("tests/data/user_agent/crawlers.txt").splitlines(), []


def uap_core(repo: Repo) -> tuple[list[str], list[str]]:
    bots: list[str] = []
    browsers: list[str] = []
    devices = load_yaml(repo.read("tests/test_device.yaml"))
    assert isinstance(devices, dict)
    for case in devices["test_cases"]:
        family = case.get("family")
        if family == "Spider":
            bots.append(case["user_agent_string"])
        elif family not in (None, "Other", "Generic Feature Phone"):
            browsers.append(case["user_agent_string"])
    for path in ("firefox_user_agent_strings", "opera_mini_user_agent_strings"):
        cases = load_yaml(repo.read(f"test_resources/{path}.yaml"))
        assert isinstance(cases, dict)
        browsers += [case["user_agent_string"] for case in cases["test_cases"]]
    podcasts = load_yaml(repo.read("test_resources/podcasting_user_agent_strings.yaml"))
    assert isinstance(podcasts, dict)
    bots += [case["user_agent_string"] for case in podcasts["test_cases"]]
    return bots, browsers


def ua_parser_js(repo: Repo) -> tuple[list[str], list[str]]:
    def cases(path: str) -> list[dict[str, object]]:
        loaded = json.loads(repo.read(path))
        assert isinstance(loaded, list)
        return loaded

    bots: list[str] = []
    browsers: list[str] = []
    for kind in ("crawler", "fetcher", "cli", "library"):
        bots += [str(c["ua"]) for c in cases(f"test/data/ua/extension/{kind}.json")]
    for case in cases("test/data/ua/browser/browser-all.json"):
        expect = case["expect"]
        # Automation the set itself names: a bot by this bench's definition.
        automated = isinstance(expect, dict) and expect.get("name") in AUTOMATION
        (bots if automated else browsers).append(str(case["ua"]))
    browsers += [str(c["ua"]) for c in cases("test/data/ua/extension/inapp.json")]
    for path in repo.paths("test/data/ua/device/"):
        browsers += [str(c["ua"]) for c in cases(path)]
    return bots, browsers


def device_detector(repo: Repo) -> tuple[list[str], list[str]]:
    bots: list[str] = []
    browsers: list[str] = []
    for path in repo.paths("Tests/fixtures/"):
        if not path.endswith(".yml"):
            continue
        loaded = load_yaml(repo.read(path))
        if not isinstance(loaded, list):
            continue
        for case in loaded:
            if not isinstance(case, dict) or "user_agent" not in case:
                continue
            user_agent = str(case["user_agent"])
            client = case.get("client") or {}
            if "bot" in case:
                bots.append(user_agent)
            elif isinstance(client, dict) and client.get("type") == "browser":
                browsers.append(user_agent)
    return bots, browsers


def isbot(repo: Repo) -> tuple[list[str], list[str]]:
    crawlers = load_yaml(repo.read("fixtures/crawlers.yml"))
    browsers = load_yaml(repo.read("fixtures/browsers.yml"))
    assert isinstance(crawlers, dict) and isinstance(browsers, dict)
    bots = [str(ua) for group in crawlers.values() for ua in group]
    for path in repo.paths("fixtures/downloaded/"):
        if path.endswith(".json"):
            bots += [str(ua) for ua in json.loads(repo.read(path))]
    return bots, [str(ua) for group in browsers.values() for ua in group]


BUILDERS = {
    "crawler-detect": crawler_detect,
    "uap-core": uap_core,
    "ua-parser-js": ua_parser_js,
    "device-detector": device_detector,
    "isbot": isbot,
}


def clean(agents: list[str]) -> list[str]:
    kept = {" ".join(a.split()) for a in agents}
    return sorted(a for a in kept if a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    args = parser.parse_args()
    sets = {name: build(Repo(args.mirrors, name)) for name, build in BUILDERS.items()}
    every_bot = {ua for bots, _ in sets.values() for ua in clean(bots)}
    for name, (bots, browsers) in sets.items():
        rows = [("bot", ua) for ua in clean(bots)]
        rows += [("browser", ua) for ua in clean(browsers) if ua not in every_bot]
        text = "".join(f"{label}\t{ua}\n" for label, ua in rows)
        (DATA / f"ua-{name}.tsv.xz").write_bytes(lzma.compress(text.encode("utf-8"), preset=9))
        counts = {label: sum(r[0] == label for r in rows) for label in ("bot", "browser")}
        print(f"{name}: {counts['bot']} bots, {counts['browser']} browsers")


if __name__ == "__main__":
    main()
