"""Helpers of the report tests (not a test module): runs made by the CLI, a hostile run, a page's parts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from decaylab.lab.cli import main
from decaylab.lab.store import Store
from decaylab.results import ConfigResult
from sweep_models import SWEEP_FILE as SWEEP_SETUP

HOSTILE = '"><script>alert(1)</script><img src=https://evil.example/x.png onerror=alert(2)>'
HOSTILE_ID = "r</script><script>alert('id')</script>"
HOSTILE_FILE = '"><img src=x onerror=alert(3)>.png'  # a figure's file name (no "/": it is one path component)


def decaylab(base: Path, *argv: str) -> str:
    """Run ``decaylab ARGV --json --quiet`` in-process in directory ``base`` (store ``base/decaylab.db``,
    outputs in ``base/runs/RUN_ID``) as the command line would (``sys.argv`` set, so the store records the
    command); return the run id."""
    old_cwd, old_argv = Path.cwd(), sys.argv
    out, err = io.StringIO(), io.StringIO()
    os.chdir(base)
    sys.argv = ["decaylab", *argv, "--json", "--quiet"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--json", "--quiet"])
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    assert code == 0, err.getvalue()
    return str(json.loads(out.getvalue())["run_id"])


def sweep_file(base: Path) -> Path:
    path = base / "setup_file.py"
    path.write_text(textwrap.dedent(SWEEP_SETUP))
    return path


def hostile_run(store_path: Path, out_dir: Path, png: bytes) -> str:
    """A d2l-linear run stored by hand whose id, command, option texts, environment and figure file name
    are all markup, with one finished configuration; its figure is ``png`` under a hostile file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HOSTILE_FILE).write_bytes(png)
    opts = {"lambd": [0.0, 3.0], "epochs": 2, "lr": 0.003, "batch_size": 5, "n_train": 20, "n_test": 100, "dim": 200,
            "seed": [0], "impl": "batched"}
    raw = {k: str(v) for k, v in opts.items()}
    raw["impl"] = HOSTILE
    configs = [{"lambd": 0.0, "seed": 0, "impl": HOSTILE}, {"lambd": 3.0, "seed": 0, "impl": HOSTILE}]
    with Store(store_path) as store:
        store.create_run(HOSTILE_ID, "d2l-linear", f"decaylab run d2l-linear --out {shlex.quote(str(out_dir))} --impl {shlex.quote(HOSTILE)}",
                         opts, raw, HOSTILE, "0", configs, environment={"cpu": HOSTILE, "torch": HOSTILE})
        results = []
        for i, config in enumerate(configs):
            curves = {"epoch": [1.0, 2.0], "train_loss": [2.0, 1.0 + i], "test_loss": [3.0, 2.0 + i], "w_norm": [5.0, 4.0 - i]}
            metrics = {k: v[-1] for k, v in curves.items() if k != "epoch"}
            results.append((i, ConfigResult(params=config, status="done", metrics=metrics, curves=curves)))
        store.save_results(HOSTILE_ID, results)
        store.set_status(HOSTILE_ID, "finished")
    return HOSTILE_ID


class Parts(HTMLParser):
    """Every tag with its attributes, and the text of every ``<script>``."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self._script: dict[str, str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "script":
            self._script = values
            self.scripts.append((values, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def resource_urls(page: str) -> list[str]:
    """Every URL the page's markup names: src, href, srcset, poster, data, action, formaction attributes."""
    keys = ("src", "href", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href")
    return [attrs[k] for _, attrs in Parts(page).tags for k in keys if k in attrs]


def embedded_json(page: str) -> list[Any]:
    return [json.loads(text) for attrs, text in Parts(page).scripts if attrs.get("type") == "application/json"]
