"""The ``DEDUPKIT_*`` settings, read, typed and checked once, at ``init_app``.

:func:`load` turns ``app.config`` (and, for what it leaves unset, the environment) plus the
keyword overrides given to :class:`~dedupkit.DedupKit` into one frozen :class:`Settings`.
Everything else reads that object; a mistake is a :class:`ConfigurationError` naming the fix.

Precedence, one rule for every key: a keyword override beats ``app.config``, which beats an
environment variable of the same name, which beats the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import Request

from .errors import ConfigurationError
from .event.limits import MAX_BATCH_SIZE
from .queue_url import parse_queue_url
from .ratelimit import parse_rate
from .redaction import redacted_url as redacted_url

logger = logging.getLogger("dedupkit")

#: Pinterest's production API root.
DEFAULT_API_BASE_URL = "https://api.pinterest.com/v5"
#: What ``DEDUPKIT_GPC`` may say a GPC signal does (see :mod:`dedupkit.intake.privacy`).
GPC_MODES = ("ldp", "opt_out", "ignore")

#: Prefix of every key in ``app.config`` and the environment.
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

#: What a cookie name may be: it is written into a Set-Cookie header and into inline scripts.
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A conversion token is sent in an HTTP header: printable ASCII, no spaces.
_TOKEN = re.compile(r"^[\x21-\x7e]{8,4096}$")
#: Tokens that are the documentation's placeholders, not a real token.
_PLACEHOLDER = re.compile(
    r"^(pina_?(x+|\.\.\.|your.*|token)?|changeme|xxx+|your[-_]?token"
    # "<your token>", "{token}", and an environment variable that was never expanded
    r"|<.*>|\{.*\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)$",
    re.I,
)
#: The longest DEDUPKIT_HTTP_TIMEOUT: half the 30 s lease of a claimed batch.
MAX_HTTP_TIMEOUT = 15.0
#: The longest DEDUPKIT_MAX_RETRY_AFTER: a web event an hour late cannot be deduplicated.
MAX_RETRY_AFTER_LIMIT = 3600.0
#: Strings that mean yes or no in an environment variable.
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

#: A guard for a page: a flag, or ``(request) -> bool``.
Guard = bool | Callable[[Request], bool]


@dataclass(frozen=True)
class Settings:
    """Every setting, typed. Field ``foo_bar`` is the key ``DEDUPKIT_FOO_BAR``."""

    #: The numeric ad account id the Conversions API reports to.
    ad_account_id: str | None = None
    #: The conversion access token from Ads Manager (printable ASCII). It never leaves the
    #: server and is redacted from every message; set it in the environment, not the code.
    conversion_token: str | None = field(default=None, repr=False)
    #: The numeric Pinterest Tag id. Without it ``dedupkit.head()`` renders no base code (a
    #: warning says so) and only the Conversions API reports events.
    tag_id: str | None = None
    #: Whether dedupkit sends anything. ``None``: on when the credentials are set. ``False``:
    #: nothing is sent on either channel and no credentials are needed. ``True``: missing
    #: credentials are a start-up error.
    enabled: bool | None = None
    #: Where Conversions API requests go (the fake's ``api_base_url`` in tests).
    api_base_url: str = DEFAULT_API_BASE_URL
    #: Send ``?test=true``: Pinterest validates every event and records none.
    test_mode: bool = False
    #: Where the tag's script (core.js) loads from (the fake's ``pintrk_src`` in tests).
    pintrk_src: str = "https://s.pinimg.com/ct/core.js"
    #: Pinterest's image pixel, for ``<noscript>`` visitors (the fake's ``pixel_url`` in tests).
    pixel_url: str = "https://ct.pinterest.com/v3/"
    #: The durable outbox. ``None``: a SQLite file in the app's instance folder;
    #: ``redis://host:port/db`` for several hosts (needs ``flask-dedupkit[redis]``).
    queue_url: str | None = None
    #: Prefix of every Redis key, so shops sharing a Redis never mix; ``None``:
    #: ``dedupkit:<ad account id>``.
    queue_namespace: str | None = None
    #: Where the blueprint is mounted: the snippet, the events endpoint, the ledger, metrics.
    url_prefix: str = "/dedupkit"
    #: A CDN's client-IP header to trust (``CF-Connecting-IP``); ``None``:
    #: ``request.remote_addr`` (use Werkzeug's ``ProxyFix`` for ``X-Forwarded-For``).
    client_ip_header: str | None = None
    #: Send nothing on either channel until the visitor says yes (``dedupkit.consent(true)``).
    require_consent: bool = False
    #: The events the browser may report on its own: views and intents, never money.
    browser_events: tuple[str, ...] = DEFAULT_BROWSER_EVENTS
    #: The dedup ledger at ``<URL_PREFIX>/debug`` (404 while off): ``True``, or a callable
    #: ``(request) -> bool`` asked on every request, e.g. ``lambda request:
    #: current_user.is_admin``.
    debug_ui: Guard = False
    #: Prometheus text at ``<URL_PREFIX>/metrics`` (404 while off): ``True``, or a callable
    #: ``(request) -> bool`` like ``DEBUG_UI``.
    metrics: Guard = False
    #: Seconds after ``event_time`` during which delivery is retried; later, an event is a
    #: dead letter (``expired``): Pinterest could no longer deduplicate it.
    retry_window: float = 3600.0
    #: Advertiser-defined event names, passed to both channels unchanged.
    advertiser_events: tuple[str, ...] = ()
    #: Region of phone numbers written without a country code (e.g. ``"US"``); without it
    #: such numbers are dropped rather than guessed.
    phone_region: str | None = None
    #: Fire a ``page_visit`` on every page view, one id on both channels (and no bare
    #: ``pintrk('page')``).
    page_visit: bool = False
    #: The first-party cookie keeping the ``epik`` click id (one year, set by the server).
    click_id_cookie: str = "_epik"
    #: The first-party cookie keeping the visitor's consent decision (``1`` yes, ``0`` no).
    consent_cookie: str = "_dedupkit_consent"
    #: ``Domain=`` of dedupkit's cookies, e.g. ``shop.example`` to share them with
    #: ``www.shop.example``; ``None``: the page's host.
    cookie_domain: str | None = None
    #: Other origins whose pages may post events (another subdomain); same-origin always may.
    allowed_origins: tuple[str, ...] = ()
    #: Send SHA-256 of Pinterest's ``_pin_unauth`` cookie as ``external_id``, as Pinterest's
    #: own Magento and Salesforce plugins do.
    hash_pin_unauth: bool = True
    #: Skip crawlers, HTTP libraries and headless browsers. ``False`` counts them too (an app's
    #: own end-to-end tests).
    bot_filter: bool = True
    #: Regexes (searched, case-insensitive) of user agents that are never bots, for a shopper
    #: the filter takes for one (docs/topics/bots.md). In the environment: one regex.
    bot_allow: tuple[str, ...] = ()
    #: Deliver from a thread in each web process; turn it off when ``flask dedupkit worker``
    #: delivers.
    background_sender: bool = True
    #: Seconds within which the sender sends what was enqueued (a batch goes sooner once
    #: full); an idle sender looks at the outbox less and less often from there.
    flush_interval: float = 1.0
    #: Events per Conversions API request, at most Pinterest's 1000.
    batch_size: int = MAX_BATCH_SIZE
    #: Seconds one Conversions API request may take in all (connecting, writing, reading); at
    #: most 15, half the outbox lease, so that no request outlives its claim.
    http_timeout: float = 10.0
    #: The longest pause a ``Retry-After`` or ``x-ratelimit-reset`` may impose, in seconds,
    #: at most an hour and the retry window: one bogus header must not hold delivery for long.
    max_retry_after: float = 300.0
    #: The Conversions API ``partner_name``; only if Pinterest gave you one.
    partner_name: str | None = None
    #: Signs tickets and visitor tokens; ``None``: the app's ``SECRET_KEY``.
    secret_key: str | None = field(default=None, repr=False)
    #: Old signing keys that still verify, oldest first (like Flask's ``SECRET_KEY_FALLBACKS``).
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    #: What a Global Privacy Control signal does: ``"ldp"`` (send flagged for Limited Data
    #: Processing), ``"opt_out"`` (send nothing) or ``"ignore"``.
    gpc: str = "ldp"
    #: ``(request) -> True | False | None``, consulted before the consent cookie.
    consent: Callable[[Request], bool | None] | None = field(default=None, compare=False)
    #: ``(request) -> str | None``: the response's Content-Security-Policy nonce, where no
    #: extension puts it in ``request.csp_nonce`` (Flask-Talisman) or ``g.csp_nonce``.
    csp_nonce: Callable[[Request], str | None] | None = field(default=None, compare=False)
    #: Beacons per client IP on ``POST <URL_PREFIX>/events``, e.g. ``"300/minute"``; ``"off"``.
    rate_limit: str = "300/minute"
    #: A CDN's header with the visitor's country, for LDP's hashed ``country``.
    geo_country_header: str | None = None
    #: A CDN's header with the visitor's region (state), for LDP's hashed ``st``.
    geo_region_header: str | None = None
    #: Not a config key: an httpx transport for the Conversions API client (tests, proxies).
    transport: httpx.BaseTransport | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def bot_allow_regex(self) -> re.Pattern[str] | None:
        """``bot_allow`` as one regex; ``None`` when empty. Checked by :func:`load`."""
        if not self.bot_allow:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.bot_allow), re.IGNORECASE)

    @property
    def credentials_set(self) -> bool:
        return bool(self.ad_account_id and self.conversion_token)

    def outbox_url(self, instance_path: str) -> str:
        """The queue URL; by default a SQLite file of the ad account in the app's instance
        folder (``dedupkit-<account>.sqlite3``), so that two shops never share one."""
        if self.queue_url:
            return self.queue_url
        account = f"-{self.ad_account_id}" if self.ad_account_id else ""
        return f"sqlite:///{instance_path}/dedupkit{account}.sqlite3"

    def outbox_namespace(self) -> str:
        """Redis key prefix: one per ad account, so shops sharing a Redis never mix."""
        return self.queue_namespace or f"dedupkit:{self.ad_account_id or 'default'}"


#: Config keys (without the prefix) and their field names; ``transport`` is no config key.
KEYS: Mapping[str, str] = {
    f.name.upper(): f.name for f in dataclasses.fields(Settings) if f.name != "transport"
}
#: Every setting (without the prefix) and its default, for documentation and tooling.
DEFAULTS: Mapping[str, Any] = {key: getattr(Settings(), name) for key, name in KEYS.items()}


def load(
    config: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and check the settings for one app.

    :param config: ``app.config``; every ``DEDUPKIT_*`` key in it must be known.
    :param environ: where unset keys are looked up (``os.environ`` by default).
    :param overrides: keyword arguments of ``DedupKit(...)``: field names, e.g. ``transport``.
    :raises ConfigurationError: naming the key and what to do about it.
    """
    environ = os.environ if environ is None else environ
    _check_known(k for k in config if k.startswith(PREFIX))
    _warn_unknown(k for k in environ if k.startswith(PREFIX))
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in KEYS.values() and name != "transport"]
    if unknown:
        raise ConfigurationError(
            f"DedupKit() got unknown setting(s) {', '.join(sorted(unknown))}; pass field names "
            f"such as test_mode=True or transport=httpx.MockTransport(...)"
        )
    values: dict[str, Any] = {}
    for key, name in KEYS.items():
        raw: Any
        if name in overrides:
            raw = overrides[name]
        elif config.get(PREFIX + key) is not None:
            raw = config[PREFIX + key]
            _warn_shadowed(key, raw, environ)
        elif PREFIX + key in environ:
            raw = environ[PREFIX + key]
        else:
            continue
        values[name] = _coerce(key, raw, DEFAULTS[key])
    if "transport" in overrides:
        values["transport"] = overrides["transport"]
    settings = Settings(**values)
    _check(settings)
    credentials = ("AD_ACCOUNT_ID", "CONVERSION_TOKEN")
    missing = " and ".join(PREFIX + key for key in credentials if not getattr(settings, KEYS[key]))
    if settings.enabled is None:
        settings = dataclasses.replace(settings, enabled=settings.credentials_set)
        if not settings.enabled:
            logger.warning(
                "dedupkit sends nothing: %s %s not set (in app.config or the environment; "
                "or set DEDUPKIT_ENABLED = False to silence this)",
                missing,
                "are" if " and " in missing else "is",
            )
    elif settings.enabled and not settings.credentials_set:
        raise ConfigurationError(
            f"{missing} must be set (in app.config or the environment) while "
            "DEDUPKIT_ENABLED is on; set DEDUPKIT_ENABLED = False to run without Pinterest"
        )
    if settings.enabled and not settings.tag_id:
        logger.warning(
            "DEDUPKIT_TAG_ID is not set: dedupkit.head() renders no Pinterest base code, so only "
            "the Conversions API channel reports events"
        )
    return settings


def _check_known(keys: Iterable[str]) -> None:
    for key in keys:
        if _unknown(key):
            raise ConfigurationError(
                f"unknown setting {key}{_closest(key)} (see docs/configuration.md)"
            )


def _warn_unknown(keys: Iterable[str]) -> None:
    # The environment is shared with other programs: a stray variable is not an error, but
    # a misspelt one must not go unnoticed.
    for key in sorted(keys):
        if _unknown(key):
            logger.warning(
                "the environment variable %s is no dedupkit setting and is ignored%s",
                key,
                _closest(key),
            )


def _unknown(key: str) -> bool:
    name = key[len(PREFIX) :]
    return name not in KEYS


def _closest(key: str) -> str:
    close = difflib.get_close_matches(key[len(PREFIX) :], list(KEYS), n=1, cutoff=0.6)
    return f"; did you mean {PREFIX}{close[0]}?" if close else ""


def _warn_shadowed(key: str, value: Any, environ: Mapping[str, str]) -> None:
    """Say when ``app.config`` hides a different environment value: the variable a
    deployment sets would otherwise be ignored without a word."""
    name = PREFIX + key
    if name not in environ:
        return
    try:
        same = _coerce(key, value, DEFAULTS[key]) == _coerce(key, environ[name], DEFAULTS[key])
    except ConfigurationError:
        same = False
    if same:
        return
    # Names only: either value may be a secret.
    logger.warning(
        "%s is set in both app.config and the environment, with different values; "
        "app.config wins. Remove it from app.config to use the environment variable",
        name,
    )


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``; strings from the environment are parsed."""
    name = PREFIX + key
    if key == "ENABLED":
        return None if value is None else _bool(name, value)
    if key in ("DEBUG_UI", "METRICS"):
        return value if callable(value) else _bool(name, value)
    if key == "CONSENT":
        if value is None or callable(value):
            return value
        raise ConfigurationError(
            f"{name} must be a callable (request) -> True | False | None, got "
            f"{type(value).__name__}"
        )
    if key == "BOT_ALLOW":
        return _patterns(name, value)
    if key == "CSP_NONCE":
        if value is None or callable(value):
            return value
        # A fixed string would be one nonce for every response: no protection at all.
        raise ConfigurationError(
            f"{name} must be a callable (request) -> str | None returning this response's "
            f"nonce, got {type(value).__name__}"
        )
    if isinstance(default, bool):
        return _bool(name, value)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return _number(name, value, type(default))
    if isinstance(default, tuple):
        return _names(name, value)
    if value is None:
        return None
    if not isinstance(value, str):
        if key in ("AD_ACCOUNT_ID", "TAG_ID") and isinstance(value, int):
            return str(value)
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    return value.strip() or None


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigurationError(f"{name} must be True or False, got {value!r}")


def _number(name: str, value: Any, kind: type) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name} must be a number of type {kind.__name__}, got {value!r}"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return number


def _names(name: str, value: Any) -> tuple[str, ...]:
    """A tuple of names from a list or a comma/space separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    raise ConfigurationError(f"{name} must be a list of names, got {value!r}")


#: Longest pattern of ``DEDUPKIT_BOT_ALLOW``, and how many: they run on every bot's request.
MAX_ALLOW_PATTERN = 200
MAX_ALLOW_PATTERNS = 50


def _patterns(name: str, value: Any) -> tuple[str, ...]:
    """Regexes from a list, or one regex from a string (the environment's form)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigurationError(f"{name} must be a list of regexes, got {value!r}")
    patterns = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"{name} must be a list of regexes, got {item!r} in it")
        if item.strip():
            patterns.append(item.strip())
    if len(patterns) > MAX_ALLOW_PATTERNS:
        raise ConfigurationError(
            f"{name} has {len(patterns)} patterns, at most {MAX_ALLOW_PATTERNS}: join them"
        )
    for pattern in patterns:
        if len(pattern) > MAX_ALLOW_PATTERN:
            raise ConfigurationError(
                f"{name}: the pattern {pattern[:40]!r}… is longer than {MAX_ALLOW_PATTERN} "
                "characters; a part of the user agent that only the shopper's app sends is enough"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigurationError(
                f"{name}: {pattern!r} is not a valid regular expression ({error}); escape "
                "characters such as ( ) [ ] . + with a backslash"
            ) from None
    return tuple(patterns)


def _check(settings: Settings) -> None:
    token = settings.conversion_token
    if token is not None:
        if _PLACEHOLDER.match(token) or "\N{HORIZONTAL ELLIPSIS}" in token:
            raise ConfigurationError(
                "DEDUPKIT_CONVERSION_TOKEN is a placeholder: set it to the conversion access "
                "token from Ads Manager (Conversions > Conversion access token)"
            )
        if not _TOKEN.match(token):
            raise ConfigurationError(
                "DEDUPKIT_CONVERSION_TOKEN must be printable ASCII without spaces (copy it "
                "again from Ads Manager; a stray quote, space or ellipsis is a common cause)"
            )
    if settings.ad_account_id is not None and not settings.ad_account_id.isdigit():
        raise ConfigurationError(
            "DEDUPKIT_AD_ACCOUNT_ID must be the numeric ad account id (digits only), got "
            f"{settings.ad_account_id[:40]!r}"
        )
    if settings.tag_id is not None and not settings.tag_id.isdigit():
        raise ConfigurationError(
            f"DEDUPKIT_TAG_ID must be the numeric tag id (digits only), got "
            f"{settings.tag_id[:40]!r}"
        )
    for key in ("CLICK_ID_COOKIE", "CONSENT_COOKIE"):
        value = getattr(settings, KEYS[key])
        if not isinstance(value, str) or not COOKIE_NAME.match(value):
            raise ConfigurationError(
                f"{PREFIX}{key} must be letters, digits, '_' or '-' (at most 64), got {value!r}"
            )
    if not settings.url_prefix.startswith("/"):
        raise ConfigurationError(
            f"DEDUPKIT_URL_PREFIX must start with '/', got {settings.url_prefix!r}"
        )
    if not 1 <= settings.batch_size <= MAX_BATCH_SIZE:
        raise ConfigurationError(
            f"DEDUPKIT_BATCH_SIZE must be between 1 and {MAX_BATCH_SIZE}, got {settings.batch_size}"
        )
    if not settings.api_base_url.startswith(("https://", "http://")):
        raise ConfigurationError(
            f"DEDUPKIT_API_BASE_URL must be an http(s) URL, got {settings.api_base_url!r}"
        )
    if settings.http_timeout > MAX_HTTP_TIMEOUT:
        raise ConfigurationError(
            f"DEDUPKIT_HTTP_TIMEOUT must be at most {MAX_HTTP_TIMEOUT:.0f} s (half the outbox "
            f"lease, so that no request outlives its claim), got {settings.http_timeout:g}"
        )
    if not 1 <= settings.max_retry_after <= min(MAX_RETRY_AFTER_LIMIT, settings.retry_window):
        raise ConfigurationError(
            "DEDUPKIT_MAX_RETRY_AFTER must be between 1 and "
            f"{min(MAX_RETRY_AFTER_LIMIT, settings.retry_window):.0f} seconds (at most an "
            "hour, and within DEDUPKIT_RETRY_WINDOW: a longer pause expires every event), got "
            f"{settings.max_retry_after:g}"
        )
    if settings.queue_url is not None:
        _check_queue_url(settings.queue_url)
    if settings.gpc not in GPC_MODES:
        raise ConfigurationError(
            f"DEDUPKIT_GPC must be one of {', '.join(repr(m) for m in GPC_MODES)}, "
            f"got {settings.gpc!r}"
        )
    parse_rate(settings.rate_limit)
    if settings.metrics is not False:
        _check_metrics_client()


def _check_metrics_client() -> None:
    # At start-up, not at the first scrape: a dashboard that stays empty tells nobody why.
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "DEDUPKIT_METRICS is on but prometheus_client is not installed: "
            "pip install 'flask-dedupkit[metrics]' (or turn DEDUPKIT_METRICS off)"
        ) from None


def _check_queue_url(url: str) -> None:
    # Checked here rather than when the outbox first opens: at the first track().
    kind = parse_queue_url(url).kind
    if kind == "redis":
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "DEDUPKIT_QUEUE_URL is a Redis URL but the redis client is not installed: "
                "pip install 'flask-dedupkit[redis]'"
            ) from None
    elif kind == "postgresql":
        _check_postgres_url(url)


def _check_postgres_url(url: str) -> None:
    """A PostgreSQL outbox needs the extra's SQLAlchemy and psycopg 3 (not psycopg2)."""
    scheme = url.partition(":")[0].lower()
    if scheme.partition("+")[2] not in ("", "psycopg"):
        raise ConfigurationError(
            f"DEDUPKIT_QUEUE_URL: the PostgreSQL outbox runs on psycopg 3, not {scheme!r}: "
            "use postgresql+psycopg://user:password@host:5432/database"
        )
    try:
        import psycopg  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "DEDUPKIT_QUEUE_URL is a PostgreSQL URL but SQLAlchemy or psycopg is not "
            "installed: pip install 'flask-dedupkit[postgres]'"
        ) from None
    parts = urlsplit(url)
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigurationError(
            "DEDUPKIT_QUEUE_URL: a PostgreSQL outbox URL names a host and a database: "
            "postgresql+psycopg://user:password@host:5432/database"
        )
