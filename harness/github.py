"""GitHub Actions plumbing: the job summary, step outputs, workflow-command annotations and the
one sticky pull-request comment, through GitHub's REST API with the standard library only.

The sticky comment is found by a hidden HTML marker (`<!-- harness:NAME -->`) in its body: the
pull request's comments are listed page by page, the marked one is updated in place (PATCH) and
a new one is created (POST) only when none exists, so every push updates one comment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_API = "https://api.github.com"
MARKER = "<!-- harness:{name} -->"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_RETRY_STATUS = (502, 503, 504)


class GitHubError(Exception):
    """An API call failed; the message names the call, the status and GitHub's reason."""


# -- workflow commands and files --------------------------------------------------------------


def in_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS", "").lower() == "true"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(
    message: str,
    *,
    level: str = "error",
    file: str | None = None,
    line: int | None = None,
    title: str | None = None,
) -> str:
    """A workflow command line: `::error file=models/a.onnx,title=...::message`."""
    properties = []
    if file:
        properties.append(f"file={_escape_property(file)}")
    if line:
        properties.append(f"line={line}")
    if title:
        properties.append(f"title={_escape_property(title)}")
    joined = (" " + ",".join(properties)) if properties else ""
    return f"::{level}{joined}::{_escape_data(message)}"


def append_summary(markdown: str, path: str | None = None) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY (or `path`); None when there is none."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as stream:
        stream.write(markdown.rstrip("\n") + "\n")
    return Path(target)


def set_outputs(values: Mapping[str, str], path: str | None = None) -> Path | None:
    """Append step outputs to $GITHUB_OUTPUT (or `path`); multi-line values use a delimiter."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as stream:
        for key, value in values.items():
            if "\n" in value:
                delimiter = f"harness_{uuid.uuid4().hex}"
                stream.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                stream.write(f"{key}={value}\n")
    return Path(target)


# -- REST -------------------------------------------------------------------------------------


class GitHub:
    """The few REST calls the harness makes, authenticated with a token."""

    def __init__(self, token: str, api_url: str = DEFAULT_API, timeout_s: float = 30.0) -> None:
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, url: str, body: Any = None) -> tuple[Any, Mapping[str, str]]:
        """(decoded JSON, headers) of one call; retries twice on 502/503/504."""
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        data = json.dumps(body).encode() if body is not None else None
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "harness",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(3):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    payload = response.read()
                    return (json.loads(payload) if payload else None), dict(response.headers)
            except urllib.error.HTTPError as exc:
                if exc.code in _RETRY_STATUS and attempt < 2:
                    time.sleep(1.0 + attempt)
                    continue
                detail = exc.read().decode(errors="replace")
                with contextlib.suppress(ValueError, AttributeError):
                    detail = json.loads(detail).get("message", detail)
                raise GitHubError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
            except urllib.error.URLError as exc:
                raise GitHubError(f"{method} {url}: {exc.reason}") from None
        raise AssertionError("unreachable")

    def paginate(self, path: str) -> list[Any]:
        """Every item of a list endpoint, following the Link header's rel="next"."""
        items: list[Any] = []
        url: str | None = f"{path}{'&' if '?' in path else '?'}per_page=100"
        while url:
            page, headers = self.request("GET", url)
            items.extend(page or [])
            found = _NEXT.search(headers.get("Link", "") or headers.get("link", ""))
            url = found.group(1) if found else None
        return items

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return self.paginate(f"/repos/{repo}/issues/{number}/comments")

    def create_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        created, _ = self.request("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body})
        return dict(created)

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        path = f"/repos/{repo}/issues/comments/{comment_id}"
        updated, _ = self.request("PATCH", path, {"body": body})
        return dict(updated)

    def pull_head_sha(self, repo: str, number: int) -> str:
        pull, _ = self.request("GET", f"/repos/{repo}/pulls/{number}")
        return str(pull["head"]["sha"])


def marker(name: str) -> str:
    """The hidden marker naming a sticky comment (no `--` inside an HTML comment)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:/ -]", "", name).replace("--", "-").strip() or "harness"
    return MARKER.format(name=cleaned)


def upsert_comment(
    client: GitHub, repo: str, number: int, body: str, name: str
) -> tuple[str, dict[str, Any]]:
    """Update the comment carrying `name`'s marker, or create it: ("updated"|"created", comment).

    Comments written by a bot (the workflow token's github-actions[bot]) come first, oldest
    first; a marked comment the token may not edit (someone quoting the marker) is passed over."""
    tag = marker(name)
    text = f"{tag}\n{body}"
    marked = [c for c in client.comments(repo, number) if tag in (c.get("body") or "")]
    marked.sort(key=lambda c: ((c.get("user") or {}).get("type") != "Bot", int(c["id"])))
    for comment in marked:
        try:
            return "updated", client.update_comment(repo, int(comment["id"]), text)
        except GitHubError as exc:
            if "HTTP 403" not in str(exc) and "HTTP 404" not in str(exc):
                raise
    return "created", client.create_comment(repo, number, text)
