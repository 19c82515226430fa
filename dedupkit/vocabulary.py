"""The one vocabulary of skip reasons and event states, shared by the intake, the outboxes,
the ledger, the CLI and the metrics.

Each member's value is what is stored (and what the events route answers); ``.label`` is the
plain words the ledger and the CLI show, ``.metric`` the Prometheus label value. Adding a
member here is the only change needed for every surface to show it.
"""

from __future__ import annotations

import enum
from typing import TypeVar

_W = TypeVar("_W", bound="_Worded")


class _Worded(str, enum.Enum):
    """A ``str`` enum whose members are ``(stored value, label)``; the metric is the value."""

    label: str
    metric: str

    def __new__(cls: type[_W], value: str, label: str = "") -> _W:
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        member.metric = value
        return member

    def __str__(self) -> str:
        return str(self.value)


class SkipReason(_Worded):
    """Why an event was not sent to the Conversions API (the tag may still count it).

    The ``LOST_*`` members are losses, not choices: see :attr:`is_loss`.
    """

    NO_CONSENT = ("no_consent", "no consent")
    BOT = ("bot", "bot")
    NO_IDENTITY = ("no_identity", "no e-mail, mobile ad id, or IP and user agent")
    #: The visitor sent a GPC signal and ``DEDUPKIT_GPC = "opt_out"``.
    GPC_OPT_OUT = ("gpc_opt_out", "the visitor opted out (Global Privacy Control)")
    #: The outbox failed and the memory fallback was full: the oldest event held was dropped.
    LOST_MEMORY_FULL = ("lost_memory_full", "lost: the outbox failed and the memory was full")
    #: A line of a fallback spill file could not be read; it was moved to a ``.bad`` file.
    LOST_UNREADABLE = (
        "lost_unreadable",
        "lost: a line of the fallback file could not be read (kept in its .bad file)",
    )

    @property
    def is_loss(self) -> bool:
        """Whether this counts an event lost by a failure rather than skipped by a rule."""
        return bool(self.value.startswith("lost_"))

    @classmethod
    def label_of(cls, value: str) -> str:
        """The label of a stored reason; a reason this version does not know reads as words."""
        try:
            return cls(value).label
        except ValueError:
            return value.replace("_", " ")


class EventState(_Worded):
    """Where an event stored in the outbox is on its way to Pinterest."""

    PENDING = ("pending", "pending")
    SENDING = ("sending", "being sent")
    DELIVERED = ("delivered", "delivered")
    DEAD = ("dead", "dead letter")


__all__ = ["EventState", "SkipReason"]
