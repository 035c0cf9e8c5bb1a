"""Report pages in a real headless Chromium (Debian's ``chromium``, driven by ``playwright``): each loads
with no console error and no request but the file itself, every image has loaded, the λ slider redraws
the curve it is moved to, and a screenshot is not blank.

Skipped, with the reason, where Chromium or playwright is missing, except under ``CI=true``: there a
missing browser fails the tests (``.ci/run`` installs Debian's ``chromium`` first).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab.lab.report import write_report
from decaylab.lab.store import Store
from report_helpers import HOSTILE_ID, decaylab, hostile_run, sweep_file

# one worker builds the module's runs (and the browser) once, not each of the two
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("report-browser")]

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def _chromium() -> str | None:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    return found


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires the browser tests to run (.ci/run installs Debian's chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    path = _chromium()
    if path is None:
        _missing("no chromium on this machine (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pages under test, written by :func:`write_report`: a d2l-linear run, a sweep, a comparison,
    the index, and a run whose id, options and figure name are markup."""
    base = tmp_path_factory.mktemp("browser")
    d2l = decaylab(base, "run", "d2l-linear", "--lambd", "0:6:7", "--epochs", "30")
    sweep = decaylab(base, "sweep", f"{sweep_file(base)}:setup", "--lambd", "0,0.03,0.3", "--seed", "0,1", "--lr", "0.1",
                     "--batch-size", "32", "--epochs", "3")
    png = (base / "runs" / d2l / "curves.png").read_bytes()
    hostile_run(base / "decaylab.db", base / "hostile out", png)
    out = base / "pages"
    with Store(base / "decaylab.db", create=False, readonly=True) as store:
        return {
            "d2l": write_report(store, [d2l], out / "d2l.html"),
            "sweep": write_report(store, [sweep], out / "sweep.html"),
            "comparison": write_report(store, [d2l, sweep], out / "comparison.html"),
            "index": write_report(store, out=out / "index.html", all_runs=True),
            "hostile": write_report(store, [HOSTILE_ID], out / "hostile.html"),
        }


class Visit:
    """A page opened in a fresh tab, with every console message, page error, dialog and request recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(self.url, wait_until="load")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    opened: list[Visit] = []

    def open_(path: Path) -> Visit:
        v = Visit(browser, path)
        opened.append(v)
        return v

    yield open_
    for v in opened:
        v.close()


@pytest.mark.parametrize("name", ["d2l", "sweep", "comparison", "index", "hostile"])
def test_page_loads_clean_offline_with_every_image_and_is_not_blank(name: str, pages: dict[str, Path], visit: Any) -> None:
    v = visit(pages[name])
    v.page.wait_for_timeout(200)  # let late scripts (plotly's resize) report
    assert not v.errors, v.errors
    assert not [m for m in v.console if m[0] in ("error", "warning")], v.console
    assert not v.dialogs, v.dialogs  # no injected script ran
    assert all(u == v.url or u.startswith(("data:", "about:")) for u in v.requests), v.requests
    images = v.page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
    expected = {"d2l": 2, "sweep": 2, "comparison": 4, "index": 0, "hostile": 1}[name]
    assert len(images) == expected
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    if name in ("d2l", "sweep", "comparison"):  # the same visit: the page is not blank, the plot drew lines
        assert _variance(v.page.screenshot(full_page=True)) > 100.0  # a white page is 0; text and figures are far above
        plot = v.page.query_selector(".curves-plot")
        assert plot is not None and _variance(plot.screenshot()) > 50.0


def _trace(v: Visit, root: str) -> Any:
    return v.page.evaluate(
        f"() => {{ const d = document.querySelector('{root} .curves-plot').data;"
        " return d.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)})); }"
    )


def _move(v: Visit, root: str, index: int) -> None:
    v.page.evaluate(
        f"() => {{ const r = document.querySelector('{root} input.lambda-range'); r.value = '{index}';"
        " r.dispatchEvent(new Event('input', {bubbles: true})); }"
    )


@pytest.mark.parametrize("name", ["d2l", "sweep"])
def test_slider_redraws_the_chosen_lambda(name: str, pages: dict[str, Path], visit: Any) -> None:
    v = visit(pages[name])
    root = ".lambda-view"
    data = v.page.evaluate(f"() => JSON.parse(document.querySelector('{root} script.lambda-data').textContent)")
    n = len(data["entries"])
    assert n >= 3
    for index in (0, n - 1):
        _move(v, root, index)
        entry = data["entries"][index]
        traces = _trace(v, root)
        drawn = {t["name"]: t["y"] for t in traces}
        loss = data["curve_names"][0]
        expected = entry["settings"][0]["curves"][loss]
        assert drawn[loss] == pytest.approx(expected, rel=1e-12)  # the plot holds the chosen λ's curve
        readout = v.page.inner_text(f"{root} .readout")
        assert readout.startswith(f"{data['label']} = ") and "final ‖w‖₂ = " in readout
        assert v.page.get_attribute(root, "data-index") == str(index)
    _move(v, root, 0)
    first = _trace(v, root)
    _move(v, root, n - 1)
    last = _trace(v, root)
    assert first[0]["y"] != last[0]["y"]  # moving the slider changed the drawn curve
    marker = v.page.evaluate(f"() => document.querySelector('{root} .overview-plot').data[1].x[0]")
    assert marker == data["entries"][n - 1]["value"]
    assert not v.errors and not [m for m in v.console if m[0] == "error"]


def _variance(png: bytes) -> float:
    from PIL import Image

    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(gray.var())
