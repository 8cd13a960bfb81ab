"""/docs: Swagger UI from the installed package, anonymous, under a same-origin-only policy."""

from __future__ import annotations

from html.parser import HTMLParser

from api_helpers import PROBLEM_JSON, assert_problem

from api.docs import CONTENT_SECURITY_POLICY

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """Every script, stylesheet and icon a page loads, and any inline script body."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.openapi: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self._in_script = True
            if found.get("src"):
                self.urls.append(str(found["src"]))
        elif tag == "link" and found.get("rel") in ("stylesheet", "icon"):
            self.urls.append(str(found["href"]))
        if found.get("data-openapi"):
            self.openapi = found["data-openapi"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def fetch(client, url: str):
    """GET `url`, read and closed (a file's response holds the file open until then)."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def test_the_root_leads_to_the_docs_page(anonymous):
    response = anonymous.get("/")

    assert response.status_code == 302
    assert response.headers["Location"] == "/docs"


def test_the_docs_page_and_everything_it_loads_are_served_without_a_token(anonymous):
    page = anonymous.get("/docs")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    refs = References()
    refs.feed(page.get_data(as_text=True))
    assert refs.inline == []  # the policy would refuse it
    assert {url.rsplit(".", 1)[-1] for url in refs.urls} == {"js", "css", "png"}
    for url in refs.urls:
        assert url.startswith("/docs/"), url  # this origin, no CDN
        asset = fetch(anonymous, url)
        assert asset.status_code == 200, url
        assert asset.mimetype == MEDIA_TYPES[url[url.rindex(".") :]], url
        assert asset.get_data(), url
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    scripts = {
        url.rsplit("/", 1)[-1]: fetch(anonymous, url).get_data(as_text=True)
        for url in refs.urls
        if url.endswith(".js")
    }
    assert "SwaggerUIBundle" in scripts["swagger-ui-bundle.js"]
    assert "SwaggerUIBundle(" in scripts["init.js"]
    document = anonymous.get(refs.openapi)
    assert document.status_code == 200
    assert document.json["openapi"].startswith("3.1")


def test_the_docs_page_allows_only_its_own_origin(anonymous):
    page = anonymous.get("/docs")

    policy = page.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert not {"script-src", "style-src", "connect-src"} & directives.keys()  # all from default
    assert "unsafe" not in policy
    assert directives["frame-ancestors"] == "'none'"


def test_only_the_page_s_own_files_are_served(anonymous):
    for path in ("/docs/index.html", "/docs/oauth2-redirect.html", "/docs/..%2Fpyproject.toml"):
        response = anonymous.get(path)
        assert_problem(response, 404)
        assert response.mimetype == PROBLEM_JSON


def test_the_page_is_not_an_operation_of_the_document(client):
    paths = client.get("/openapi.json").json["paths"]

    assert not {"/", "/docs"} & paths.keys()
