"""Print the browser snippet's sizes: raw, gzip -9, and the share of each budget used.

Run from anywhere: ``python bench/snippet_size.py``. Standard library only.
"""

from __future__ import annotations

import gzip
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"

#: (file, measure, budget in bytes): the files served and inlined (the minified ones), with the
#: same budgets as tests/web/test_snippet_size.py.
BUDGETS = [
    ("dedupkit.min.js", "gzip", 1536),
    ("dedupkit-stub.min.js", "raw", 420),
]


def main() -> None:
    print(f"{'file':<22} {'raw':>6} {'gzip -9':>8}  {'budget':<12} {'used':>5}")
    for name, measure, budget in BUDGETS:
        data = (STATIC / name).read_bytes()
        raw, packed = len(data), len(gzip.compress(data, 9))
        used = packed if measure == "gzip" else raw
        limit = f"{budget} {measure}"
        print(f"{name:<22} {raw:>6} {packed:>8}  {limit:<12} {used / budget:>5.0%}")


if __name__ == "__main__":
    main()
