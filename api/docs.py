"""/docs: the API's interactive page (Swagger UI over /openapi.json); `/` leads there.

The page's scripts and styles are Swagger UI's own dist files from the installed
`flask-swagger-ui` package (its blueprint is not used: its page configures
Swagger UI in an inline script), so the page works offline and behind a proxy
that blocks CDNs. Like /openapi.json it needs no token (api.auth lists these
endpoints): it describes the API and calls it only with the token a reader
pastes into "Authorize". Its Content-Security-Policy allows nothing but this
origin, which is why the configuration is a script file of ours, not inline.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, abort, redirect, send_from_directory, url_for
from werkzeug.wrappers import Response as BaseResponse

bp = Blueprint("docs", __name__)

# Swagger UI 5 (OpenAPI 3.1, the version of our document), as the package ships it.
SWAGGER_UI_DIST = Path(str(files("flask_swagger_ui") / "dist"))
# The files the page loads, and nothing else of the package: (file, media type).
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
# Only this origin: scripts, styles, the document and "Try it out" requests. Images
# also from data: URIs, which Swagger UI's stylesheet uses for its icons.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
ASSET_MAX_AGE = 3600

# Swagger UI's settings: the document to show; no call to the public validator
# (its badge would load an image from another site); the token typed into
# "Authorize" is kept for this tab only, never in local storage.
INIT_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false
  });
});
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Inventory and orders API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <noscript>This page needs JavaScript; the document itself is at
    <a href="{openapi}">{openapi}</a>.</noscript>
  <div id="swagger-ui" data-openapi="{openapi}"></div>
  <script src="{bundle}"></script>
  <script src="{init}"></script>
</body>
</html>
"""


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def root() -> BaseResponse:
    """The API has no home page of its own: its description is it."""
    return redirect(url_for("docs.page"))


@bp.get("/docs")
def page() -> Response:
    """The interactive page: Swagger UI over /openapi.json."""
    html = PAGE.format(
        css=escape(url_for("docs.asset", name="swagger-ui.css")),
        icon=escape(url_for("docs.asset", name="favicon-32x32.png")),
        bundle=escape(url_for("docs.asset", name="swagger-ui-bundle.js")),
        init=escape(url_for("docs.init")),
        openapi=escape(url_for("openapi.openapi_document")),
    )
    return _secured(Response(html, mimetype="text/html"))


@bp.get("/docs/init.js")
def init() -> Response:
    """The page's Swagger UI configuration (a file: the policy refuses inline scripts)."""
    response = Response(INIT_JS, mimetype="text/javascript")
    response.cache_control.max_age = ASSET_MAX_AGE
    return _secured(response)


@bp.get("/docs/<name>")
def asset(name: str) -> Response:
    """One of Swagger UI's files, from the installed package."""
    if name not in ASSETS:
        abort(404)
    response = send_from_directory(SWAGGER_UI_DIST, name, max_age=ASSET_MAX_AGE)
    response.mimetype = ASSETS[name]
    return _secured(response)
