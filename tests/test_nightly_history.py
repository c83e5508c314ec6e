"""The nightly from a fresh clone, end to end with the real things: a model repository with two
commits pushed to a local bare repository, two nights (the digits example's real host results
plus a language model's and a counted item's figures, tests/history_fixtures.py), the second
with a planted 30% drop in tokens per second and a 2% rise in counted instructions, appended to
the `harness-history` branch by `harness history --add` as the nightly workflow does. A fresh
clone on another machine (another cache) fails `harness nightly --fail-on-regression` with both
named and the commits they stepped in, publishes the site on the branch, and the site renders
in headless Chromium at desktop and phone width. The same two nights in PostgreSQL give the same
report. These are the nightly workflow's steps (.github/workflows/nightly.yml) run directly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from history_fixtures import night_document
from test_html_browser import PHONE, PHONE_FRAME, _chromium, _has_colour, _shot, browser
from test_reports import example_results

from conftest import git

__all__ = ["browser"]  # the fixture, shared with the report's browser tests

REPOSITORY = "acme/models"


def _harness(cwd: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    env.pop("GITHUB_ACTIONS", None)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two nights on the history branch of a local bare repository; the commits they ran at."""
    example = example_results(tmp_path_factory)
    root = tmp_path_factory.mktemp("nights")
    origin = root / "models.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(origin)], check=True)
    work = root / "work"
    subprocess.run(["git", "clone", "--quiet", str(origin), str(work)], check=True,
                   capture_output=True)  # fmt: skip
    commits = []
    for night, change in ((1, "the model"), (2, "a faster-looking decode kernel")):
        (work / "CHANGES").write_text(f"{change}\n")
        git(work, "add", "CHANGES")
        git(work, "commit", "-qm", change)
        git(work, "push", "-q", "origin", "HEAD:main")
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        commits.append(sha)
        results = root / f"night{night}.json"
        results.write_text(json.dumps(night_document(example, night, sha)))
        added = _harness(work, root / "ci-cache", "history", "--history", "git:origin", "--add",
                         str(results), "--commit", sha, "--ref", "refs/heads/main",
                         "--repository", REPOSITORY, "--limit", "0")  # fmt: skip
        assert added.returncode == 0, added.stderr
    return {"root": root, "origin": origin, "commits": commits}


def _fresh_clone(nights: dict[str, Any], name: str) -> Path:
    clone = nights["root"] / name
    subprocess.run(["git", "clone", "--quiet", str(nights["origin"]), str(clone)], check=True,
                   capture_output=True)  # fmt: skip
    return clone


def _nightly(cwd: Path, cache: Path, history: str, out: Path, *more: str) -> Any:
    return _harness(cwd, cache, "nightly", "--history", history, "--repository", REPOSITORY,
                    "--out", str(out), "--fail-on-regression", *more)  # fmt: skip


def test_the_second_night_fails_with_both_regressions_and_their_commits(
    nights: dict[str, Any],
) -> None:
    clone = _fresh_clone(nights, "fresh")
    out = nights["root"] / "report"
    done = _nightly(clone, nights["root"] / "laptop-cache", "git:origin", out, "--publish")
    assert done.returncode == 1, done.stdout + done.stderr
    old, new = (sha[:10] for sha in nights["commits"])
    lines = [line for line in done.stdout.splitlines() if "regression:" in line]
    assert len(lines) == 2, done.stdout
    instructions, tokens = sorted(lines)
    assert (
        tokens.startswith(
            "harness: regression: tokens_per_s of generation[slm-int4@host] (measured) moved -30.0%"
        )
        and f"in commits {old}..{new}" in tokens
    )
    assert (
        instructions.startswith(
            "harness: regression: instructions_per_inference of instructions[digits-onnx@rpi4] "
            "(counted) moved +2.0%"
        )
        and f"in commits {old}..{new}" in instructions
    )
    assert "harness: nightly: 2 regressions in the last 3 runs" in done.stdout
    summary = (out / "nightly.md").read_text()
    head = summary.split("<details>")[0]
    assert head.startswith("## ❌ harness nightly: 2 regressions in the last 3 runs")
    assert f"in commits `{old}..{new}`" in head and "one run so far" in head
    assert "**generation[slm-int4@host]** tokens per s 50 → tokens per s 35 (-30.0%" in head
    # The history lives on the branch: the fresh clone read two nights; the site is there too.
    listed = subprocess.run(
        ["git", "--git-dir", str(nights["origin"]), "ls-tree", "-r", "--name-only",
         "harness-history"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len([p for p in listed if p.startswith("runs/")]) == 2
    assert {"index.html", ".nojekyll", "models/slm-int4.html"} <= set(listed)
    published = subprocess.run(
        ["git", "--git-dir", str(nights["origin"]), "show", "harness-history:index.html"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert published == (out / "site" / "index.html").read_text()


def test_the_same_two_nights_in_postgresql_give_the_same_report(
    nights: dict[str, Any], postgresql: str
) -> None:
    root = nights["root"]
    for night, sha in enumerate(nights["commits"], 1):
        added = _harness(root, root / "pg-cache", "history", "--history", postgresql, "--add",
                         str(root / f"night{night}.json"), "--commit", sha, "--ref",
                         "refs/heads/main", "--repository", REPOSITORY, "--limit", "0")  # fmt: skip
        assert added.returncode == 0, added.stderr
    out = root / "pg-report"
    done = _nightly(root, root / "pg-cache", postgresql, out)
    assert done.returncode == 1, done.stderr
    git_out = root / "git-report"
    clone = _fresh_clone(nights, "fresh-for-pg")
    assert _nightly(clone, root / "other-cache", "git:origin", git_out).returncode == 1
    assert (out / "nightly.md").read_text() == (git_out / "nightly.md").read_text()
    assert (out / "site" / "index.html").read_bytes() == (
        git_out / "site" / "index.html"
    ).read_bytes()


# -- the site in a browser ------------------------------------------------------------------

SITE_PROBE = """
<script>
window.addEventListener("load", () => {
  const state = JSON.stringify({width: window.innerWidth,
    scroll_width: document.documentElement.scrollWidth,
    charts: document.querySelectorAll("svg").length,
    links: [...document.links].map(a => a.getAttribute("href"))});
  if (window.parent !== window) { window.parent.postMessage(state, "*"); return; }
  const out = document.createElement("pre"); out.id = "probe"; out.textContent = state;
  document.body.appendChild(out);
});
</script>
"""


def _probed(page: Path, folder: Path, name: str) -> Path:
    probed = folder / name
    probed.write_text(page.read_text().replace("</body>", f"{SITE_PROBE}</body>"))
    return probed


def _state(browser: str, profile: Path, page: Path, size: str) -> dict[str, Any]:
    dom = _chromium(browser, profile, f"--window-size={size}", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the page's load event never fired"
    state: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"'))
    return state


def test_the_site_renders_on_a_desktop_and_a_phone(
    browser: str, nights: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    clone = _fresh_clone(nights, "fresh-for-site")
    assert _nightly(clone, tmp_path / "cache", "git:origin", out).returncode == 1
    site = out / "site"
    index = _probed(site / "index.html", site, "probed-index.html")
    model = _probed(site / "models" / "slm-int4.html", site / "models", "probed-model.html")

    state = _state(browser, tmp_path / "p1", index, "1280,800")
    assert state["scroll_width"] <= state["width"], state
    assert "models/slm-int4.html" in state["links"] and "models/digits-onnx.html" in state["links"]
    assert state["charts"] >= 6  # a sparkline per headline figure per cell
    state = _state(browser, tmp_path / "p2", model, "1280,800")
    assert state["charts"] == 2 and "../index.html" in state["links"]  # tokens/s, perplexity

    shots = Path(os.environ.get("HARNESS_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    desktop = _shot(browser, tmp_path / "s1", site / "index.html", "1280,800",
                    shots / "nightly-index-desktop.png")  # fmt: skip
    from harness.report.html import CELL_COLOUR

    # The regressed cells and the others are painted in the first screen.
    assert _has_colour(desktop, CELL_COLOUR["fail"]) and _has_colour(desktop, CELL_COLOUR["pass"])
    for name, page in (("index", index), ("model", model)):
        frame = site / f"phone-{name}.html"
        relative = page.relative_to(site).as_posix()
        frame.write_text(PHONE_FRAME.format(src=relative, w=PHONE[0], h=PHONE[1]))
        state = _state(browser, tmp_path / f"p-{name}", frame, "500,900")
        assert state["width"] == PHONE[0] and state["scroll_width"] <= PHONE[0], (name, state)
        pixels = _shot(browser, tmp_path / f"s-{name}", frame, "500,900",
                       shots / f"nightly-{name}-phone.png")  # fmt: skip
        assert pixels[: PHONE[1], : PHONE[0]].std() > 0.02  # something is drawn
    _shot(browser, tmp_path / "s3", site / "models" / "slm-int4.html", "1280,1400",
          shots / "nightly-model-desktop.png")  # fmt: skip


def test_a_pull_requests_report_shows_each_figures_trend_and_leaves_the_branch_alone(
    nights: dict[str, Any],
) -> None:
    """What a pull request's check runs: `harness report` with the branch read-only; the full
    table gets a history column (sparkline, newest stored value) beside the PR's own value."""
    clone = _fresh_clone(nights, "pull-request")
    tip = ["git", "--git-dir", str(nights["origin"]), "rev-parse", "harness-history"]
    before = subprocess.run(tip, capture_output=True, text=True, check=True).stdout
    out = nights["root"] / "pr-report"
    done = _harness(clone, nights["root"] / "pr-cache", "report",
                    str(nights["root"] / "night2.json"), "--history", "git:origin",
                    "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # no gate failed; trends only shown
    text = (out / "report.md").read_text()
    assert "| device | model | suite | figure | history | vs baseline |" in text
    row = next(line for line in text.splitlines() if "| generation |" in line)
    assert "█▁ last 35 (2 runs) 🔺" in row, row
    after = subprocess.run(tip, capture_output=True, text=True, check=True).stdout
    assert after == before
