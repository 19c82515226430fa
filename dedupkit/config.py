"""The ``DEDUPKIT_*`` settings: names, defaults and how a value is looked up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .client import DEFAULT_API_BASE_URL
from .errors import ConfigurationError

#: Prefix of every key in ``app.config``.
PREFIX = "DEDUPKIT_"

#: Events the browser may report on its own: views and intents, never money. Purchases and
#: sign-ups are tracked by the server, which knows they really happened.
DEFAULT_BROWSER_EVENTS = (
    "page_visit",
    "view_category",
    "view_content",
    "search",
    "add_to_cart",
    "add_to_wishlist",
    "watch_video",
)

#: Every setting (without the prefix) and its default.
DEFAULTS: Mapping[str, Any] = {
    "AD_ACCOUNT_ID": None,
    "CONVERSION_TOKEN": None,
    "TAG_ID": None,
    "ENABLED": True,
    "API_BASE_URL": DEFAULT_API_BASE_URL,
    "TEST_MODE": False,
    "PINTRK_SRC": "https://s.pinimg.com/ct/core.js",
    "QUEUE_URL": None,  # sqlite:///<instance path>/dedupkit.sqlite3
    "URL_PREFIX": "/dedupkit",
    "CLIENT_IP_HEADER": None,
    "REQUIRE_CONSENT": False,
    "BROWSER_EVENTS": DEFAULT_BROWSER_EVENTS,
    "DEBUG_UI": False,
    "RETRY_WINDOW": 3600,
    # Beyond the contract's table:
    "ADVERTISER_EVENTS": (),
    "PHONE_REGION": None,
    "PAGE_VISIT": False,
    "CLICK_ID_COOKIE": "_epik",
    "CONSENT_COOKIE": "_dedupkit_consent",
    "COOKIE_DOMAIN": None,
    "ALLOWED_ORIGINS": (),
    "HASH_PIN_UNAUTH": True,
    "SEND_LATE_AS_OFFLINE": False,
    "BACKGROUND_SENDER": True,
    "FLUSH_INTERVAL": 1.0,
    "BATCH_SIZE": 1000,
    "HTTP_TIMEOUT": 10.0,
    "PARTNER_NAME": None,
}

#: Settings that fall back to a same-named environment variable (``DEDUPKIT_CONVERSION_TOKEN``):
#: secrets belong in the environment, not in committed config files.
FROM_ENVIRONMENT = ("AD_ACCOUNT_ID", "CONVERSION_TOKEN", "TAG_ID")


#: What a cookie name may be: it is written into a Set-Cookie header and into inline scripts.
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def apply_defaults(config: dict[str, Any]) -> None:
    """``setdefault`` every key on a Flask config, reading credentials from the environment."""
    for name, default in DEFAULTS.items():
        key = PREFIX + name
        if name in FROM_ENVIRONMENT and config.get(key) is None:
            config[key] = os.environ.get(key) or None
        config.setdefault(key, default)


def setting(config: Mapping[str, Any], name: str) -> Any:
    """The value of ``DEDUPKIT_<name>``."""
    return config[PREFIX + name]


def require(config: Mapping[str, Any], *names: str) -> None:
    """:raises ConfigurationError: listing every required setting that is empty."""
    missing = [PREFIX + name for name in names if not config.get(PREFIX + name)]
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} must be set (in app.config or the environment) while "
            f"DEDUPKIT_ENABLED is on; set DEDUPKIT_ENABLED = False to run without Pinterest"
        )


def names_list(value: object, key: str) -> tuple[str, ...]:
    """A tuple of names from a list or a comma/space separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    raise ConfigurationError(f"{PREFIX}{key} must be a list of names, got {value!r}")


def redacted_url(url: str) -> str:
    """``url`` fit for logs: a Redis URL may carry a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def cookie_name(config: Mapping[str, Any], name: str) -> str:
    """The cookie name in ``DEDUPKIT_<name>``. :raises ConfigurationError: if unusable."""
    value = config[PREFIX + name]
    if not isinstance(value, str) or not COOKIE_NAME.match(value):
        raise ConfigurationError(
            f"{PREFIX}{name} must be letters, digits, '_' or '-' (at most 64), got {value!r}"
        )
    return value
