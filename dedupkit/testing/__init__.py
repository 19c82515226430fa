"""Test doubles: :class:`FakePinterest`, an offline Pinterest on a real local socket.

Needs the ``testing`` extra (``pip install 'flask-dedupkit[testing]'``) for ``jsonschema``.
"""

from __future__ import annotations

from .fake import FakePinterest as FakePinterest
from .records import Conversion as Conversion
from .records import PageCall as PageCall
from .records import RejectedRequest as RejectedRequest
from .records import RequestRecord as RequestRecord
from .records import TagEvent as TagEvent
from .schema import request_errors as request_errors
from .schema import response_errors as response_errors

__all__ = [
    "Conversion",
    "FakePinterest",
    "PageCall",
    "RejectedRequest",
    "RequestRecord",
    "TagEvent",
    "request_errors",
    "response_errors",
]
