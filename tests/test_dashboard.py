"""GET /: the dashboard page, through the Chalice test client (the browser tests drive it)."""
import base64
import hashlib
import re
import shutil
import subprocess

import pytest

from chalicelib import dashboard, models, openapi
from tests.conftest import TOKEN


def _hashes(policy, directive):
    found = re.search(rf"(?:^|; ){directive} ([^;]+)", policy)
    return found.group(1).split() if found else []


def _sha256(text):
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def test_served_without_a_token_as_one_self_contained_html_page(client):
    response = client.http.get("/")
    assert response.status_code == 200
    headers = {name.lower(): value for name, value in response.headers.items()}
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    html = response.body.decode()
    assert html.startswith("<!doctype html>")
    assert '<form id="token-form"' in html and 'type="password"' in html
    assert TOKEN not in html and "Bearer " + TOKEN not in html
    # Everything inline: no asset URL to break under a stage path, nothing from elsewhere.
    assert not re.search(r"<(script|link)[^>]+(src|href)=", html)
    assert "http://" not in html and "https://" not in html.replace(
        'placeholder="https://example.com/hook"', "")
    # As served, every byte counted; 44 KB since tenants' filter, column and detail field.
    assert len(response.body) < 44_000


def test_csp_allows_exactly_the_inlined_script_and_style(client):
    response = client.http.get("/")
    policy = response.headers["Content-Security-Policy"]
    html = response.body.decode()
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert _hashes(policy, "script-src") == [_sha256(scripts[0])]
    assert _hashes(policy, "style-src") == [_sha256(styles[0])]
    for directive in ("default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'",
                      "form-action 'none'", "base-uri 'none'", "object-src 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_the_script_loses_only_indentation_and_comment_lines():
    source = "// a comment line\nconst a = 'x  // y';\n\n  if (a) {\n    f(a); // note\n  }\n"
    assert dashboard._js(source) == "const a = 'x  // y';\nif (a) {\nf(a); // note\n}\n"


@pytest.mark.skipif(not shutil.which("node"), reason="no node to parse the script with")
def test_the_served_script_parses(tmp_path):
    script = re.search(r"<script>(.*?)</script>", dashboard.page(), re.S).group(1)
    (tmp_path / "app.js").write_text(script)
    subprocess.run(["node", "--check", str(tmp_path / "app.js")], check=True)


def test_page_is_built_once_and_server_strings_only_go_in_as_text():
    assert dashboard.page() is dashboard.page()
    script = (dashboard.HERE / "app.js").read_text()
    # Data reaches the DOM through textContent; no HTML parsing of anything.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "localStorage" not in script and "sessionStorage" in script


def _template(html, template_id):
    return re.search(rf'<template id="{template_id}">(.*?)</template>', html, re.S).group(1)


def _choices(shared, name, default, enum):
    select = re.search(rf'<select name="{name}">(.*?)</select>', shared, re.S).group(1)
    offered = re.findall(r'<option(?: value="(\w+)")?>(\w+)?', select)
    assert [value or text for value, text in offered] == \
        [default] + [choice for choice in enum if choice != default], name


def test_the_edit_form_names_every_field_a_patch_takes_and_the_apis_choices():
    """The edit form (with the shared tags and lifecycle fields) is filled and sent by the
    fields' names: each must be one PATCH takes, and every field PATCH takes but the payload
    must be there; an object field is a fieldset of that name holding an input for each of
    its properties (name.property). A new task option fails this until the dashboard shows
    it."""
    html = dashboard.page()
    shared = _template(html, "opts-tpl")
    edit = _template(html, "edit-tpl")
    names = set(re.findall(r'\bname="(\w+)"', shared + edit))
    fields = openapi.TASK_UPDATE["properties"]
    assert names == set(fields) - {"payload"}
    parts = re.findall(r'\bname="(\w+)\.(\w+)"', shared + edit)
    objects = {name for name in names if "properties" in fields[name]}
    assert objects and {name for name, _ in parts} == objects
    for name in objects:
        assert f'<fieldset name="{name}">' in shared + edit
        assert {part for whole, part in parts if whole == name} == set(fields[name]["properties"])
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    listed = re.search(r"const OPTS = \[([^\]]*)\]", script).group(1)
    assert set(re.findall(r"'(\w+)'", listed)) == set(re.findall(r'\bname="(\w+)"', shared))
    for declared in models.OPTIONS:  # each choice offered, the API's default first
        if "enum" in declared.schema:
            _choices(shared, declared.name, declared.default, declared.schema["enum"])
        for part, schema in declared.schema.get("properties", {}).items():
            if "enum" in schema:
                _choices(shared, f"{declared.name}.{part}", schema["default"], schema["enum"])
    # Every error span names a field the API may name.
    spans = set(re.findall(r'data-field="(\w+)"', shared + edit))
    assert spans <= names and spans


def test_the_status_filter_offers_every_status():
    html = dashboard.page()
    select = re.search(r'<select id="f-status">(.*?)</select>', html, re.S).group(1)
    assert re.findall(r"<option>(\w+)", select) == list(models.STATUSES)
