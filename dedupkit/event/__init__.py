"""The event: names, data, user data, limits, the page URL and the wire encoding.

Pure values and rules with no I/O; every other wing builds on them.
"""

from __future__ import annotations
