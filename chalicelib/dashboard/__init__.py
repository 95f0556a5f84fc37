"""The dashboard served at GET /: index.html with app.js and style.css inlined.

One response holds the whole page, so no relative asset URL can break under an API Gateway
stage path (/api/), and the Content-Security-Policy allows exactly those two inline blocks by
their SHA-256 hashes. The files are read on first use and kept for the process's life, with
whitespace and comments squeezed out (about a quarter of the bytes; the page stays < 25 KB):

- index.html: indentation, line breaks between tags, and the optional </option>;
- style.css: comments, whitespace next to { } ; , and after a colon, and a last ; before };
- app.js: comments, and whitespace next to punctuation, outside string and template literals
  and regular expressions, which are copied as written (template literals may be nested; a /
  after ( , = : [ ! & | ? { ; return or typeof starts a regular expression, elsewhere divides).
  A line break is dropped only after ; { } , ( [ = : ? & | >. A newline can end a statement
  only where the next token could not continue it (automatic semicolon insertion), or after
  return, break, continue, throw or yield, or before ++ or --; so either nothing changes or the
  script no longer parses, which tests/test_dashboard.py and the browser tests would show.
  A ; before } goes too (one is inserted there anyway). The scanner reads a literal within
  one line: one that spans lines, or is left open, stops the build with a RuntimeError.
"""
import base64
import functools
import hashlib
import re
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
STYLE_LINK = '<link rel="stylesheet" href="style.css">'
SCRIPT_LINK = '<script src="app.js"></script>'
_PUNCT = frozenset("{}()[];,:=<>+-*/%!&|?.~^")
_JOIN_AFTER = frozenset(";{},([=:?&|>")
_BEFORE_REGEX = frozenset("(,=:[!&|?{};")
_WORD = re.compile(r"[\w$]+")


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
    out: List[str] = []
    last = ""  # the last token put out
    gap = ""  # whitespace skipped since it: "", " " or "\n"
    braces: List[int] = []  # per open ${...}: the braces opened inside it and still open

    def put(token: str) -> None:
        nonlocal last, gap
        if last and gap:
            before, after = last[-1], token[0]
            if gap == "\n" and before not in _JOIN_AFTER:
                out.append("\n")
            elif _WORD.fullmatch(before + after) or (before in "+-/" and after in "+-/") or (
                    before + after == "<!"):  # a - -b, a / /x/, a < !b (<!-- is a comment)
                out.append(" ")
        if token == "}" and out[-1:] == [";"]:
            out.pop()
        out.append(token)
        last, gap = token, ""

    def past(i: int, stops: str) -> int:
        """The index just past the first of stops from i, escapes skipped; one line only."""
        while src[i] not in stops:
            if src[i] == "\n":
                raise RuntimeError(f"app.js: a literal spans lines (offset {i})")
            i += 2 if src[i] == "\\" else 1
        return i + 1

    i, n = 0, len(src)
    try:
        while i < n:
            c = src[i]
            if c.isspace():
                gap = "\n" if c == "\n" or gap == "\n" else " "
                end = i + 1
            elif src.startswith("//", i):
                end = src.find("\n", i)
                end = n if end < 0 else end
            elif src.startswith("/*", i):
                end = src.index("*/", i) + 2
                gap = gap or " "
            elif c in "'\"":
                end = past(i + 1, c)
                put(src[i:end])
            elif c == "`" or (c == "}" and braces and braces[-1] == 0):
                # Template text, up to its end or its next ${.
                if c == "}":
                    braces.pop()
                end = past(i + 1, "`$")
                while src[end - 1] == "$" and src[end] != "{":
                    end = past(end, "`$")
                if src[end - 1] == "$":
                    end += 1
                    braces.append(0)
                put(src[i:end])
            elif c == "/" and (not last or last[-1] in _BEFORE_REGEX
                               or last in ("return", "typeof")):
                end, in_class = i + 1, False
                while in_class or src[end] != "/":
                    if src[end] == "\n":
                        raise RuntimeError(f"app.js: a regex spans lines (offset {i})")
                    in_class = src[end] != "]" and (in_class or src[end] == "[")
                    end += 2 if src[end] == "\\" else 1
                word = _WORD.match(src, end + 1)
                end = word.end() if word else end + 1
                put(src[i:end])
            else:
                word = _WORD.match(src, i)
                token = word.group() if word else c
                if braces and c in "{}":
                    braces[-1] += 1 if c == "{" else -1
                end = i + len(token)
                put(token)
            i = end
    except (IndexError, ValueError) as error:
        raise RuntimeError("app.js: a string, template, regex or comment is left open") from error
    if braces:
        raise RuntimeError("app.js: a template literal's ${ is left open")
    return "".join(out) + "\n"


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
