"""The Flask API on ECS: an app factory over the shared dataaccess package.

gunicorn -c api/gunicorn.conf.py 'api:create_app()'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from dataaccess import Database, Settings

from . import (
    auth,
    customers,
    db,
    docs,
    health,
    jsonbody,
    openapi,
    orders,
    problems,
    products,
    requestlog,
)


def create_app(
    test_config: Mapping[str, Any] | None = None, *, settings: Settings | None = None
) -> Flask:
    """Build the app and its Database once.

    The database comes from `test_config["DATABASE"]` (a ready Database, which
    the caller disposes), else from `settings`, else from the DB_* environment.
    Token checks come from `test_config["AUTHENTICATOR"]`, else from AUTH_*.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=jsonbody.MAX_BODY_BYTES,
        # Responses are JSON documents for programs; keep the declared order.
        JSON_SORT_KEYS=False,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.json = jsonbody.JSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    database = app.config.get("DATABASE")
    if database is None:
        database = Database.from_settings(settings or Settings.from_env())
    db.init_app(app, database)
    authenticator = app.config.get("AUTHENTICATOR") or auth.Authenticator(
        auth.AuthSettings.from_env()
    )

    requestlog.configure_logging(
        os.environ.get("LOG_LEVEL", "INFO"), os.environ.get("LOG_FORMAT", "auto")
    )
    # First of the before_request hooks, so that a request refused by the next
    # ones (401, 403, 400...) has its id and duration too.
    requestlog.init_app(app)
    auth.init_app(app, authenticator)
    jsonbody.init_app(app)
    problems.register(app)
    for blueprint in (health.bp, customers.bp, products.bp, orders.bp, openapi.bp, docs.bp):
        app.register_blueprint(blueprint)
    return app
