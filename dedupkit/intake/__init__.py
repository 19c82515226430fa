"""Where events enter: the visitor, beacons, tag evidence, tickets, visitor tokens, privacy,
bots, and the one record path that turns a submission into a stored event or a skip.
"""

from __future__ import annotations
