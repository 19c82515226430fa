"""The keys that sign tickets and visitor tokens, and the serializers over them.

``DEDUPKIT_SECRET_KEY`` (or the app's ``SECRET_KEY``) signs; the fallbacks still verify, so a
key can be rotated without refusing what was signed just before. Each purpose has its own salt
(:mod:`dedupkit.intake.tickets`, :mod:`dedupkit.intake.visitor_token`).
"""

from __future__ import annotations

from functools import lru_cache

from flask import Flask
from itsdangerous import URLSafeSerializer

from .errors import ConfigurationError
from .settings import Settings


def signing_keys(app: Flask, settings: Settings) -> tuple[bytes, ...]:
    """The keys that verify, the signing key last (itsdangerous's order).

    :raises ConfigurationError: when neither ``DEDUPKIT_SECRET_KEY`` nor ``SECRET_KEY`` is set.
    """
    if settings.secret_key:
        current: str | bytes = settings.secret_key
        fallbacks: list[str | bytes] = list(settings.secret_key_fallbacks)
    elif app.secret_key:
        current = app.secret_key
        # The app's own rotation list applies to the app's own key.
        fallbacks = [
            *settings.secret_key_fallbacks,
            *(app.config.get("SECRET_KEY_FALLBACKS") or ()),
        ]
    else:
        raise ConfigurationError(
            "dedupkit needs a signing key for tickets and visitor tokens: set "
            "DEDUPKIT_SECRET_KEY (or the app's SECRET_KEY) to a long random string"
        )
    return tuple(k.encode() if isinstance(k, str) else k for k in (*fallbacks, current))


@lru_cache(maxsize=32)
def serializer(keys: tuple[bytes, ...], salt: str) -> URLSafeSerializer:
    """A URL-safe serializer over ``keys`` (one per key set and purpose, reused)."""
    return URLSafeSerializer(list(keys), salt=salt)
