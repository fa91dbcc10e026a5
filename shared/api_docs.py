"""Each service's browsable API documentation, ``/<service>/api/docs``: Swagger UI on
the service's OpenAPI document, served from the installed ``swagger-ui-bundle``
(no CDN: the pages' Content-Security-Policy allows scripts from this origin only,
and a machine may have no way out)."""

from __future__ import annotations

from flask import Flask, Response, render_template_string, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}: API</title>
<link rel="stylesheet" href="{{ url_for('api_docs_ui', filename='swagger-ui.css') }}">
<link rel="icon" href="{{ url_for('api_docs_ui', filename='favicon-32x32.png') }}">
</head>
<body>
<div id="swagger-ui" data-spec="{{ spec }}"></div>
<script src="{{ url_for('api_docs_ui', filename='swagger-ui-bundle.js') }}"></script>
<script src="{{ url_for('api_docs_start') }}"></script>
</body>
</html>
"""

START = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({url: root.dataset.spec, dom_id: "#swagger-ui", deepLinking: true});
});
"""

# Swagger UI sets style attributes on what it draws.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'"
)


def install(app: Flask, prefix: str, title: str) -> None:
    def page() -> Response:
        spec = url_for("api-docs.openapi_json")
        response = Response(render_template_string(PAGE, title=title, spec=spec))
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    def start() -> Response:
        return Response(START, mimetype="text/javascript")

    def ui(filename: str) -> Response:
        return send_from_directory(swagger_ui_path, filename, max_age=3600)

    app.add_url_rule(f"{prefix}/api/docs", "api_docs", page)
    app.add_url_rule(f"{prefix}/api/docs/start.js", "api_docs_start", start)
    app.add_url_rule(f"{prefix}/api/docs/ui/<path:filename>", "api_docs_ui", ui)
