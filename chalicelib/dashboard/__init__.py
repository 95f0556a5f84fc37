"""The dashboard served at GET /: index.html with app.js and style.css inlined.

One response holds the whole page, so no relative asset URL can break under an API Gateway
stage path (/api/), and the Content-Security-Policy allows exactly those two inline blocks by
their SHA-256 hashes. The files are read on first use and kept for the process's life, with
indentation, blank lines and comments taken out (the page stays under 44 KB):

- index.html: indentation, line breaks between tags, and the optional </option>;
- style.css: comments, whitespace next to { } ; , and after a colon, and a last ; before };
- app.js: indentation, blank lines and whole-line // comments.
"""
import base64
import functools
import hashlib
import re
from pathlib import Path
from typing import Dict, Tuple

HERE = Path(__file__).resolve().parent
STYLE_LINK = '<link rel="stylesheet" href="style.css">'
SCRIPT_LINK = '<script src="app.js"></script>'


def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def _html(text: str) -> str:
    lines = (line.strip() for line in text.splitlines())
    text = re.sub(r">\n<", "><", "\n".join(line for line in lines if line))
    return re.sub(r"</option>(?=<option|</select)", "", text) + "\n"


def _css(text: str) -> str:
    text = re.sub(r"\s+", " ", re.sub(r"/\*.*?\*/", "", text, flags=re.S))
    text = re.sub(r":\s+", ":", re.sub(r"\s*([{};,])\s*", r"\1", text))
    return text.replace(";}", "}").strip() + "\n"


def _js(src: str) -> str:
    # Indentation and whole-line comments only: anything cleverer is a JavaScript minifier,
    # which this small page does not need. app.js keeps every literal on one line.
    lines = (line.strip() for line in src.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@functools.lru_cache(maxsize=1)
def _build() -> Tuple[str, Dict[str, str]]:
    html, css, js = _html(_read("index.html")), _css(_read("style.css")), _js(_read("app.js"))
    if html.count(STYLE_LINK) != 1 or html.count(SCRIPT_LINK) != 1:
        raise RuntimeError("index.html must link style.css and app.js once each")
    if "</style" in css.lower() or "</script" in js.lower():
        raise RuntimeError("an inlined file would close its own tag")
    html = html.replace(STYLE_LINK, f"<style>{css}</style>")
    html = html.replace(SCRIPT_LINK, f"<script>{js}</script>")
    policy = "; ".join([
        "default-src 'self'", f"script-src {_hash(js)}", f"style-src {_hash(css)}",
        "connect-src 'self'", "img-src 'self'", "object-src 'none'", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'"])
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return html, headers


def page() -> str:
    """The whole page, script and style inlined."""
    return _build()[0]


def headers() -> Dict[str, str]:
    """The page response's headers: type, CSP (with the inlined blocks' hashes) and more."""
    return dict(_build()[1])
