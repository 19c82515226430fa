"""The Flask extension's face: :class:`DedupKit`, ``init_app`` and :meth:`DedupKit.track`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, has_request_context, request

from . import settings as settings_module
from .blueprint import blueprint
from .cli import cli
from .event import Event
from .intake import Submission, current_visitor, record, remember_click_id, start_delivery
from .state import EXTENSION_KEY, State, get_state
from .templating import TemplateHelpers


class DedupKit:
    """Sends each Pinterest conversion on both channels with one ``event_id``.

    ::

        kit = DedupKit(app)          # or kit = DedupKit(); kit.init_app(app)

    Settings come from ``app.config`` (``DEDUPKIT_*``, see the README's table and
    :class:`dedupkit.settings.Settings`), then the environment. Keyword arguments override
    both, by field name: ``DedupKit(app, test_mode=True, transport=httpx.MockTransport(...))``.
    """

    def __init__(self, app: Flask | None = None, **overrides: Any) -> None:
        self._overrides = overrides
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **overrides: Any) -> None:
        """Register dedupkit on ``app``; ``overrides`` beat the constructor's.

        :raises RuntimeError: if dedupkit is already registered on ``app``.
        :raises ConfigurationError: for a setting that is unknown, malformed or missing,
            naming the fix.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'DedupKit' instance is already registered on this app; create it once "
                "and call init_app once per app."
            )
        settings = settings_module.load(app.config, overrides={**self._overrides, **overrides})
        app.extensions[EXTENSION_KEY] = State(app, settings)
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.jinja_env.globals["dedupkit"] = TemplateHelpers()
        app.before_request(start_delivery)
        app.after_request(remember_click_id)
        app.cli.add_command(cli)

    def track(
        self,
        name: str,
        *,
        event_id: str | None = None,
        event_time: int | float | None = None,
        event_source_url: str | None = None,
        user: Mapping[str, Any] | None = None,
        **event_data: Any,
    ) -> Event:
        """Record a conversion for the Conversions API and return it for the tag.

        Inside a request the visitor's IP, user agent, click id and consent come from the
        request; outside one, pass them in ``user`` (``client_ip_address``,
        ``client_user_agent``, ``click_id``). ``event_data`` uses the tag's vocabulary.
        Tracking the same (name, event_id) twice sends one event. Returns at once: delivery
        happens in the background and its problems never raise here.

        :raises InvalidEvent: for an unknown event name or malformed data, naming it.
        """
        state = get_state()
        in_request = has_request_context()
        if in_request and event_source_url is None:
            event_source_url = request.url
        submission = Submission(
            name,
            event_data,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
            user=user or {},
        )
        visitor = current_visitor(state) if in_request else None
        return record(state, submission, visitor).event


__all__ = ["DedupKit"]
