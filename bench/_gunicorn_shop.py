"""The shop ``http_load.py`` serves with gunicorn: ``gunicorn --chdir bench _gunicorn_shop:app``.

Every ``DEDUPKIT_*`` setting comes from the environment (the outbox, the stand-in's URL,
``DEDUPKIT_RATE_LIMIT=off``, ``DEDUPKIT_CLIENT_IP_HEADER``); ``BENCH_CUSTOMERS`` says how many
customers the thank-you views know (the same seeded ones as the load generator's). Routes:

* ``GET /plain/<i>``: a thank-you page for customer ``i``, untracked;
* ``GET /tracked/<i>``: the same page, with ``kit.track("checkout", …)`` for customer ``i``;
* ``POST /noop``: reads the body, answers 204: the floor of a beacon endpoint;
* ``POST /dedupkit/events``: dedupkit's beacon endpoint.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
from pathlib import Path

from flask import Flask, Response, request

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hot_path import customers

from dedupkit import DedupKit

app = Flask("bench_shop")
kit = DedupKit(app)
people = customers(int(os.environ.get("BENCH_CUSTOMERS", "1000")))
# A shop's customers live in its database, not its heap: kept out of the garbage collector's
# full collections, which would otherwise walk them all and charge it to the views.
gc.freeze()
orders = itertools.count()
PAGE = "<!doctype html><title>Thank you</title><p>Thank you for your order {}.</p>"


@app.get("/plain/<int:i>")
def plain(i: int) -> str:
    person = people[i]  # the same lookup as the tracked view: the difference is track()
    return PAGE.format(person["last_name"])


@app.get("/tracked/<int:i>")
def tracked(i: int) -> str:
    person = people[i]
    order = f"{os.getpid()}-{next(orders)}"
    kit.track("checkout", order_id=order, value="72.39", currency="USD", user=person)
    return PAGE.format(person["last_name"])


@app.post("/noop")
def noop() -> Response:
    request.get_data()
    return Response(status=204)
