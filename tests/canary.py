"""The secrets canary: every form in which a site's secret could leak into what the
harness writes (the value itself, URL-quoted in an AMQP URL, base64 in an HTTP basic
authorization header), searched for in every file under some folders and in captured
terminal output."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote


def forms(user: str, secret: str) -> dict[str, str]:
    """Each distinct way ``secret`` could be written out, by name."""
    found: dict[str, str] = {}
    for name, text in (("plain", secret), ("url-quoted", quote(secret, safe="")),
                       ("basic-auth", base64.b64encode(f"{user}:{secret}".encode()).decode())):
        if text not in found.values():
            found[name] = text
    return found


def leaks(secrets: dict[str, tuple[str, str]], *, texts: dict[str, str],
          folders: list[Path], files: list[Path] | None = None) -> list[str]:
    """Where any form of any secret appears: "<secret name> (<form>) in <where>".
    ``secrets``: name -> (user, value); ``texts``: captured output by name."""
    found = []
    places = dict(texts)
    paths = [p for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*"))]
    for path in [*paths, *(files or [])]:
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    for name, (user, value) in secrets.items():
        for form, text in forms(user, value).items():
            if len(text) < 8:
                continue  # too short to tell from chance
            found += [f"{name} ({form}) in {where}" for where, body in places.items()
                      if text in body]
    return found
