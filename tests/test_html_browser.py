"""The HTML report in a real browser: headless Chromium (Debian's `chromium` package; Chrome on
GitHub's runners) loads `harness merge`'s report.html from a real run of the example with a
history, every plot decodes and renders, nothing errors, and the screenshot is not blank.
Skips without a browser on a laptop; fails under CI=true, where .ci/run must install chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unavailable
from test_reports import example_results

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--hide-scrollbars",
)
# Appended to a copy of the report: records load errors and undecodable images in the DOM.
PROBE = """
<script>
window.harnessErrors = [];
window.addEventListener("error", e => window.harnessErrors.push(String(e.message || e.type)),
                        true);
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: document.images.length, broken: broken.length,
                                    errors: window.harnessErrors});
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    unavailable("no Chromium here (apt-get install chromium)")
    raise AssertionError("unreachable")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of `harness report` over the example's results with a short history."""
    from harness.store import Store

    folder = tmp_path_factory.mktemp("browser")
    results = example_results(tmp_path_factory)
    document = json.loads(results.read_text())
    with Store(folder / "history.sqlite") as store:
        for night in range(6):
            document["created"] = f"2026-11-{night + 1:02d}T03:00:00Z"
            for record in document["results"]:
                if "p90_ms" in record["figures"]:
                    record["figures"]["p90_ms"] *= 1.0 + 0.01 * (night % 2)
            store.add_results(document, commit=f"{night:040x}")
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(results), "--history",
         str(folder / "history.sqlite"), "--out", str(folder / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "out" / "report.html"


def _blank(png: bytes) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    return bool(pixels.std() < 0.02)


def test_report_renders_in_headless_chromium(browser: str, report: Path, tmp_path: Path) -> None:
    page = report.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", f"{PROBE}</body>"))

    dom = _chromium(browser, tmp_path / "profile-dom", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in ("Gates", "Latency", "Accuracy per class", "Memory", "Trends", "Devices"):
        assert f"<h2>{heading}</h2>" in dom.stdout, heading
    assert "harness report: " in dom.stdout and "digits-onnx" in dom.stdout
    probe = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert probe, "the page's load event never fired"
    state = json.loads(probe.group(1).replace("&quot;", '"'))
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)"', dom.stdout)
    assert state == {"images": len(images), "broken": 0, "errors": []}
    assert len(images) >= 7  # latency, accuracy, memory, and a trend per headline figure
    for alt, data in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), alt
        assert not _blank(png), f"plot {alt!r} is blank"

    shot = tmp_path / "report.png"
    taken = _chromium(
        browser,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        report.as_uri(),
    )
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    screenshot = shot.read_bytes()
    assert not _blank(screenshot)
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(screenshot), format="png")
    assert pixels.shape[:2] == (2400, 1280)
    # Plots are drawn: many rows of the page differ from the white background.
    painted = (pixels[..., :3] < 0.9).any(axis=(1, 2)).mean()
    assert painted > 0.3, f"only {painted:.0%} of the rows have content"
