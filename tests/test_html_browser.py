"""The HTML report in a real browser: headless Chromium (Debian's `chromium` package; Chrome on
GitHub's runners) loads `harness merge`'s report.html from a real run of the example with a
history, every plot decodes and renders, nothing errors, and the screenshot is not blank. For the
generated 20-model × 6-device matrix: the coloured grid is on the first screen at desktop and
phone width and nothing overflows a phone (layout sanity, not pixels); the nightly page renders.
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
from typing import Any

import pytest
from test_reports import example_results

from conftest import unavailable

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


# -- the generated 20-model × 6-device report: layout at desktop and phone width ---------------

# Reports the viewport, the page's scroll width and where the grid is, from inside the page;
# in a frame it posts them to the parent (Chromium's window is at least 500 px wide, so a
# phone's 390 px is a frame of that width).
LAYOUT_PROBE = """
<script>
window.addEventListener("load", () => {
  const grid = document.getElementById("grid").getBoundingClientRect();
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  const state = JSON.stringify({width: window.innerWidth, height: window.innerHeight,
    scroll_width: document.documentElement.scrollWidth, grid_top: grid.top,
    grid_bottom: grid.bottom, images: document.images.length, broken: broken.length});
  if (window.parent !== window) { window.parent.postMessage(state, "*"); return; }
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = state;
  document.body.appendChild(out);
});
</script>
"""
PHONE = (390, 844)  # an iPhone 12-15's CSS viewport
MODELS_IN_NIGHTLY = tuple(f"model-{i:02d}" for i in range(6))  # the regressed one among them
PHONE_FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="width:{w}px;height:{h}px;border:0;display:block"></iframe>
<script>window.addEventListener("message", e => {{
  const out = document.createElement("pre"); out.id = "probe"; out.textContent = e.data;
  document.body.appendChild(out); }});</script></body></html>"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of the generated matrix (two failures, one regression), with the probe."""
    from report_fixtures import results_document

    from harness.report import html

    folder = tmp_path_factory.mktemp("generated")
    page = html.render(results_document())
    (folder / "report.html").write_text(page)
    (folder / "probed.html").write_text(page.replace("</body>", f"{LAYOUT_PROBE}</body>"))
    frame = PHONE_FRAME.format(src="probed.html", w=PHONE[0], h=PHONE[1])
    (folder / "phone.html").write_text(frame)
    return folder


def _probe(browser: str, profile: Path, page: Path, size: str) -> dict[str, float]:
    dom = _chromium(browser, profile, f"--window-size={size}", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the page's load event never fired"
    state: dict[str, float] = json.loads(found.group(1).replace("&quot;", '"'))
    return state


def _shot(browser: str, profile: Path, page: Path, size: str, out: Path) -> Any:
    import matplotlib.image

    taken = _chromium(browser, profile, f"--screenshot={out}", f"--window-size={size}",
                      page.as_uri())  # fmt: skip
    assert taken.returncode == 0 and out.is_file(), taken.stderr[-2000:]
    return matplotlib.image.imread(out, format="png")[..., :3]


def _has_colour(pixels: Any, css: str) -> bool:
    import numpy as np

    rgb = np.array([int(css[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return bool((np.abs(pixels - rgb).max(axis=-1) < 2 / 255).any())


def test_the_grid_is_above_the_fold_with_its_colours(
    browser: str, generated: Path, tmp_path: Path
) -> None:
    from harness.report.html import CELL_COLOUR

    state = _probe(browser, tmp_path / "dom", generated / "probed.html", "1280,800")
    assert state["images"] >= 18 and state["broken"] == 0  # 3 plots per device
    assert 0 < state["grid_top"] < state["height"] / 3, state  # the grid starts the page
    assert state["scroll_width"] <= state["width"], state
    pixels = _shot(browser, tmp_path / "shot", generated / "report.html", "1280,800",
                   tmp_path / "desktop.png")  # fmt: skip
    assert pixels.shape[:2] == (800, 1280)
    # Both failing cells and the passing ones are painted in the first screen.
    assert _has_colour(pixels, CELL_COLOUR["pass"]) and _has_colour(pixels, CELL_COLOUR["fail"])


def test_the_report_fits_a_phone_width(browser: str, generated: Path, tmp_path: Path) -> None:
    from harness.report.html import CELL_COLOUR

    state = _probe(browser, tmp_path / "dom", generated / "phone.html", "500,900")
    assert (state["width"], state["height"]) == PHONE
    # Nothing makes the page wider than the phone: wide tables scroll inside their box.
    assert state["scroll_width"] <= state["width"], state
    assert 0 < state["grid_top"] < state["height"] / 4, state
    pixels = _shot(browser, tmp_path / "shot", generated / "phone.html", "500,900",
                   tmp_path / "phone.png")  # fmt: skip
    phone = pixels[: PHONE[1], : PHONE[0]]
    assert _has_colour(phone, CELL_COLOUR["pass"])  # the grid is on the phone's first screen
    assert not _blank_pixels(phone)


def _blank_pixels(pixels: Any) -> bool:
    return bool(pixels.std() < 0.02)


def test_the_nightly_page_renders(browser: str, tmp_path: Path) -> None:
    from report_fixtures import nights, results_document

    from harness.store import Store

    history = tmp_path / "history.sqlite"
    with Store(history) as store:
        for night in nights(results_document(MODELS_IN_NIGHTLY)):
            store.add_results(night, commit=night["git"]["commit"])
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "nightly", "--history", str(history), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "out" / "nightly.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", f"{PROBE}</body>"))
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert probe, "the page's load event never fired"
    state = json.loads(probe.group(1).replace("&quot;", '"'))
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)"', dom.stdout)
    assert state == {"images": len(images), "broken": 0, "errors": []}
    assert "<h2>Regressions</h2>" in dom.stdout
    assert any(alt == "Trend of p90_ms on x86-64 (emulated)" for alt, _ in images)
    for alt, data in images:
        assert not _blank(base64.b64decode(data, validate=True)), f"plot {alt!r} is blank"
