"""/openapi.json describes the app as it is: every route, and request examples that work."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from livecode import openapi
from livecode.app import create_app
from livecode.config import Settings
from tests.utils import LiveServer

HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


def test_documented_paths_are_the_apps_routes() -> None:
    """Each documented path and method is a route of the app, and each route is documented."""
    app = create_app(Settings(database_url="sqlite://"))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served


def test_every_request_example_is_accepted(embedded_server: LiveServer) -> None:
    """Swagger's "Try it out" sends each body's example as it stands: each gets a 2xx."""
    document = openapi.document()
    schemas = document["components"]["schemas"]
    with embedded_server.client() as client:
        session_id = client.post("/code-sessions", json={"language": "python"}).json()["id"]
        tried = 0
        for path, item in document["paths"].items():
            for method, operation in item.items():
                body = operation.get("requestBody") if method in HTTP_METHODS else None
                if body is None:
                    continue
                example = _example(body, schemas)
                answer = client.request(method, path.format(session_id=session_id), json=example)
                assert answer.is_success, (method, path, example, answer.text)
                tried += 1
    assert tried == 4  # create, autosave, run a session, run once


def _example(body: dict[str, Any], schemas: dict[str, Any]) -> Any:
    reference = body["content"]["application/json"]["schema"]["$ref"]
    return schemas[reference.rsplit("/", 1)[-1]]["example"]
