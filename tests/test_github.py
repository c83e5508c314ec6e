"""`harness comment` against a GitHub stand-in on 127.0.0.1 that implements the REST endpoints it
calls (list with Link pagination, create, update, the pull request's head): one sticky comment,
updated in place; the pr-comment workflow's steps run against it too. Also the workflow-command
and GITHUB_OUTPUT helpers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from test_workflows import Runner

from conftest import ROOT
from harness import github

TOKEN = "test-token"
REPO = "octo/models"
HEAD = "feedc0de" * 5


class FakeGitHub:
    """Issue comments of one repository, served like api.github.com (pages of `page_size`)."""

    def __init__(self, page_size: int = 2) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.next_id = 1000
        self.page_size = page_size
        self.forbidden: set[int] = set()  # comment ids the token may not edit
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, number: int, body: str, user: str = "someone", kind: str = "User") -> int:
        self.next_id += 1
        self.comments.setdefault(number, []).append(
            {"id": self.next_id, "body": body, "user": {"login": user, "type": kind}}
        )
        return self.next_id

    def marked(self, number: int, marker: str) -> list[dict[str, Any]]:
        return [c for c in self.comments.get(number, []) if marker in c["body"]]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                fake.requests.append((method, url.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"message": "Bad credentials"})
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length)) if length else None
                listing = re.fullmatch(rf"/repos/{REPO}/issues/(\d+)/comments", url.path)
                single = re.fullmatch(rf"/repos/{REPO}/issues/comments/(\d+)", url.path)
                pull = re.fullmatch(rf"/repos/{REPO}/pulls/(\d+)", url.path)
                if listing and method == "GET":
                    items = fake.comments.get(int(listing[1]), [])
                    page = int(parse_qs(url.query).get("page", ["1"])[0])
                    size = fake.page_size
                    headers = {}
                    if page * size < len(items):
                        headers["Link"] = (
                            f'<{fake.url}{url.path}?per_page=100&page={page + 1}>; rel="next", '
                            f'<{fake.url}{url.path}?page=1>; rel="first"'
                        )
                    return self._send(200, items[(page - 1) * size : page * size], headers)
                if listing and method == "POST":
                    number = int(listing[1])
                    fake.add(number, payload["body"], "github-actions[bot]", "Bot")
                    return self._send(201, fake.comments[number][-1])
                if single and method == "PATCH":
                    wanted = int(single[1])
                    if wanted in fake.forbidden:
                        return self._send(403, {"message": "Resource not accessible"})
                    for comments in fake.comments.values():
                        for comment in comments:
                            if comment["id"] == wanted:
                                comment["body"] = payload["body"]
                                return self._send(200, comment)
                    return self._send(404, {"message": "Not Found"})
                if pull and method == "GET":
                    return self._send(200, {"number": int(pull[1]), "head": {"sha": HEAD}})
                return self._send(404, {"message": "Not Found"})

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

            def do_PATCH(self) -> None:  # noqa: N802
                self._route("PATCH")

        return Handler


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _comment(fake: FakeGitHub, body: Path, *extra: str, token: str = TOKEN) -> Any:
    env = {**os.environ, "GITHUB_TOKEN": token}
    env.pop("GITHUB_WORKFLOW", None)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "comment", "--repo", REPO, "--pr", "7",
         "--body", str(body), "--api-url", fake.url, *extra],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_comment_is_created_once_then_updated_in_place(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    for index in range(5):  # other people's comments: the marked one is on page 3
        fake_github.add(7, f"a review comment {index}")
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    first.write_text("## ✅ harness model gate: PASS\n")
    second.write_text("## ❌ harness model gate: FAIL\n")

    done = _comment(fake_github, first, "--marker", "model gate")
    assert done.returncode == 0, done.stderr
    assert "created comment" in done.stdout
    marker = "<!-- harness:model gate -->"
    [created] = fake_github.marked(7, marker)
    assert created["body"] == f"{marker}\n## ✅ harness model gate: PASS\n"

    fake_github.add(7, "a later comment")
    fake_github.requests.clear()
    done = _comment(fake_github, second, "--marker", "model gate")
    assert done.returncode == 0, done.stderr
    assert "updated comment" in done.stdout
    [updated] = fake_github.marked(7, marker)
    assert updated["id"] == created["id"]
    assert updated["body"] == f"{marker}\n## ❌ harness model gate: FAIL\n"
    assert len(fake_github.comments[7]) == 7  # 5 + ours + 1 later: nothing new
    methods = [m for m, _ in fake_github.requests]
    assert methods == ["GET", "GET", "GET", "GET", "PATCH"]  # 4 pages, then the update
    assert "POST" not in methods


def test_each_workflow_has_its_own_sticky_comment(fake_github: FakeGitHub, tmp_path: Path) -> None:
    body = tmp_path / "body.md"
    body.write_text("report\n")
    assert _comment(fake_github, body, "--marker", "model gate").returncode == 0
    assert _comment(fake_github, body, "--marker", "nightly").returncode == 0
    assert _comment(fake_github, body, "--marker", "model gate").returncode == 0
    assert len(fake_github.comments[7]) == 2


def test_a_marked_comment_the_token_cannot_edit_is_passed_over(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    quoted = fake_github.add(7, "I copied <!-- harness:model gate --> here")
    fake_github.forbidden.add(quoted)
    body = tmp_path / "body.md"
    body.write_text("report\n")
    done = _comment(fake_github, body, "--marker", "model gate")
    assert done.returncode == 0, done.stderr
    assert "created comment" in done.stdout
    assert fake_github.comments[7][0]["body"].startswith("I copied")
    done = _comment(fake_github, body, "--marker", "model gate")
    assert "updated comment" in done.stdout  # ours (by the bot) is found first from now on
    assert len(fake_github.comments[7]) == 2


def test_comment_refuses_a_pull_request_whose_head_moved(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    body = tmp_path / "body.md"
    body.write_text("report\n")
    done = _comment(fake_github, body, "--head-sha", "0" * 40)
    assert done.returncode == 1
    assert f"pull request #7's head is {HEAD}, not {'0' * 40}" in done.stderr
    assert 7 not in fake_github.comments
    assert _comment(fake_github, body, "--head-sha", HEAD).returncode == 0


def test_comment_errors_name_the_fix(fake_github: FakeGitHub, tmp_path: Path) -> None:
    body = tmp_path / "body.md"
    body.write_text("report\n")
    done = _comment(fake_github, body, token="")
    assert done.returncode == 2
    assert "GITHUB_TOKEN is not set" in done.stderr
    done = _comment(fake_github, body, token="wrong")
    assert done.returncode == 1
    assert "HTTP 401: Bad credentials" in done.stderr


def test_pr_comment_workflow_posts_the_downloaded_report(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    """pr-comment.yml's own steps: the report artifact of the finished gate run (here written
    where download-artifact would put it) becomes the sticky comment, twice, in place."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    runner = Runner(ROOT / ".github" / "workflows" / "pr-comment.yml", workspace, tmp_path, {})
    runner.context["github"]["event"] = {
        "workflow_run": {
            "id": 99,
            "head_sha": HEAD,
            "name": "model gate",
            "event": "pull_request",  # the job's `if:` comments on pull-request runs only
            "conclusion": "failure",
        }
    }
    runner.env_base.update(
        GITHUB_API_URL=fake_github.url,
        GITHUB_REPOSITORY=REPO,
        GITHUB_WORKFLOW="model gate comment",
    )
    runner.context["github"]["token"] = TOKEN
    report = tmp_path / "runner" / "harness-report"
    report.mkdir(parents=True)
    (report / "pr-number").write_text("7\n")
    for verdict in ("PASS", "FAIL"):
        (report / "report.md").write_text(f"## harness model gate: {verdict}\n")
        job = runner.run_job("comment", skip=("install",))
        assert not job.failed, job.log
    [comment] = fake_github.marked(7, "<!-- harness:model gate -->")
    assert comment["body"].endswith("## harness model gate: FAIL\n")
    assert len(fake_github.comments[7]) == 1

    (report / "pr-number").write_text("7; rm -rf /\n")  # the artifact is data, never code
    job = runner.run_job("comment", skip=("install",))
    assert not job.failed, job.log
    assert len(fake_github.comments[7]) == 1


def test_annotation_escapes_properties_and_message() -> None:
    line = github.annotation(
        "50% slower\nsee report", file="models/a,b.onnx", title="harness: latency FAIL"
    )
    assert line == (
        "::error file=models/a%2Cb.onnx,title=harness%3A latency FAIL::50%25 slower%0Asee report"
    )
    assert github.annotation("x", level="warning") == "::warning::x"


def test_outputs_and_summary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output, summary = tmp_path / "output", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    github.set_outputs({"verdict": "PASS", "notes": "two\nlines"})
    github.append_summary("# one")
    github.append_summary("# two\n")
    lines = output.read_text().splitlines()
    assert lines[0] == "verdict=PASS"
    delimiter = lines[1].split("<<")[1]
    assert lines[1:] == [f"notes<<{delimiter}", "two", "lines", delimiter]
    assert summary.read_text() == "# one\n# two\n"
    monkeypatch.delenv("GITHUB_OUTPUT")
    assert github.set_outputs({"a": "b"}) is None


def test_an_over_long_body_is_cut_at_a_line_with_its_details_closed(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    from harness.report.markdown import COMMENT_LIMIT, CUT_NOTE

    rows = "".join(f"| row {i} | {'x' * 60} |\n" for i in range(2000))  # ~140 kB
    body = tmp_path / "body.md"
    body.write_text(f"## ❌ harness model gate: FAIL\n\n<details><summary>All</summary>\n\n{rows}")
    done = _comment(fake_github, body, "--marker", "model gate")
    assert done.returncode == 0, done.stderr
    [posted] = fake_github.marked(7, "<!-- harness:model gate -->")
    text = posted["body"]
    assert len(text) <= COMMENT_LIMIT + len("<!-- harness:model gate -->\n")
    assert text.endswith("</details>\n" + CUT_NOTE)
    last_row = text.split("\n</details>")[0].rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"\| row \d+ \| x{60} \|", last_row)  # no row cut in half
