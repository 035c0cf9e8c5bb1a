"""``decaylab report``: the HTML of a run's page, a comparison, the index (what they hold, read against
the store), escaping of hostile strings, nothing on a page that loads from the network, and the command."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab.lab.experiments import get_experiment
from decaylab.lab.report import comparison_page, index_page, reproduce_command, run_page, script_json, write_report
from decaylab.lab.report_slider import MAX_CURVE_VALUES, lambda_param, slider_data
from decaylab.lab.store import Store
from decaylab.results import ConfigResult
from report_helpers import HOSTILE, HOSTILE_FILE, HOSTILE_ID, Parts, decaylab, embedded_json, hostile_run, resource_urls

# one worker builds the module's runs (and the browser) once, not each of the two
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.xdist_group("report")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("report")
    ids = {
        "d2l": decaylab(base, "run", "d2l-linear", "--lambd", "0,1,3", "--seed", "0,1", "--epochs", "20"),
        "long": decaylab(base, "run", "d2l-linear", "--lambd", "0:1:120", "--epochs", "2"),
        "constraint": decaylab(base, "run", "constraint", "--lambd", "log:1e-2:10:5"),
    }
    png = (base / "runs" / ids["d2l"] / "curves.png").read_bytes()
    ids["hostile"] = hostile_run(base / "decaylab.db", base / "hostile out", png)
    return {"base": base, "store": base / "decaylab.db", **ids}


@pytest.fixture
def store(lab: dict[str, Any]) -> Any:
    with Store(lab["store"], create=False, readonly=True) as s:
        yield s


def _tbody_rows(page: str) -> list[str]:
    """The rows of the page's first table body."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body)


# -- what a run's page shows -------------------------------------------------------------------------
def test_run_page_shows_every_number_of_the_store_s_table(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["d2l"])
    record = store.get_run(lab["d2l"])
    assert len(record.configs) == 6
    rows = _tbody_rows(page)
    assert len(rows) == 6
    for row, config in zip(rows, record.configs, strict=True):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        # the numbers as the terminal shows them: four significant digits (read here from the store itself)
        expected = [f"{config.params['lambd']:.4g}", str(config.params["seed"])]
        expected += [f"{config.metrics[k]:.4g}" for k in ("w_norm", "train_loss", "test_loss")] + ["done"]
        assert cells == expected
    assert "finished" in page and html.escape(lab["d2l"]) in page


def test_verdict_of_an_experiment_with_claims(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["constraint"])
    record = store.get_run(lab["constraint"])
    exp = get_experiment("constraint")
    opts = {o.name: record.options[o.name] for o in exp.options}
    claims = exp.summarize(record.configs, opts)["claims"]
    assert claims and all(v is True for v in claims.values())  # the claim holds on this run
    for name in claims:
        assert f'<span class="holds">✓ holds</span>: {name.replace("_", " ")}' in page
    assert "the claim holds" in page and "does not hold" not in page


def test_a_claim_that_fails_is_shown_as_failing() -> None:
    from decaylab.lab.report import _verdict_html

    exp = get_experiment("constraint")
    text = _verdict_html(exp, {"claims": {"pgd_reaches_ridge": False, "theta_decreasing_in_lambda": True, "b": None}})
    assert '<span class="fails">✗ does not hold</span>: pgd reaches ridge' in text
    assert '<span class="holds">✓ holds</span>: theta decreasing in lambda' in text
    assert '<span class="open">– not decided</span>: b' in text
    assert "the claim does not hold" in text
    text = _verdict_html(exp, {"claim": {"statement": "gap <smaller>", "holds": True}, "verdict": "holds: 3x closer"})
    assert "gap &lt;smaller&gt;" in text and "holds: 3x closer" in text and "the claim holds" in text
    text = _verdict_html(exp, {"claim_holds": False, "verdict": "does not hold clearly"})
    assert "✗ does not hold</span>: the experiment&#x27;s claim" in text and "the claim does not hold" in text
    assert "not decided" in _verdict_html(exp, {"holds": None})


def test_conventions_environment_and_status(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["d2l"])
    record = store.get_run(lab["d2l"])
    opts = {o.name: record.options[o.name] for o in get_experiment("d2l-linear").options}
    title = get_experiment("d2l-linear").table(record.configs, opts).title
    assert "penalty λ/2·‖w‖² on w only" in title and html.escape(title) in page
    env = record.environment
    assert html.escape(f"torch {env['torch']}") in page and html.escape(str(env["cpu_capability"])) in page
    constraint = run_page(store, lab["constraint"])  # the summary's conventions
    assert html.escape("sklearn Ridge alpha = n·λ") in constraint


def _images(page: str) -> list[tuple[str, bytes]]:
    out = []
    for tag, attrs in Parts(page).tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
            out.append((attrs["alt"], base64.b64decode(attrs["src"].split(",", 1)[1])))
    return out


def test_figures_are_the_run_directory_s_pngs(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["d2l"])
    folder = lab["base"] / "runs" / lab["d2l"]
    files = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert set(files) == {"curves.png", "norms.png"}
    assert dict(_images(page)) == files
    for name, data in files.items():  # natural size, from the PNG header
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert f'alt="{name}" width="{width}" height="{height}"' in page


def test_figures_are_drawn_when_the_run_directory_is_gone(lab: dict[str, Any], tmp_path: Path) -> None:
    shutil.copy(lab["store"], tmp_path / "moved.db")  # a store without its run directories
    with Store(tmp_path / "moved.db", create=False, readonly=True) as moved:
        page = run_page(moved, lab["d2l"])
    images = _images(page)
    assert [name for name, _ in images] == ["curves.png", "norms.png"]
    for _, data in images:
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") > 100
    assert "drawn from the store" in page


def test_the_reproducing_command_trains_the_same_numbers(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["d2l"])
    command = html.unescape(re.search(r"<h2>Reproduce</h2>\s*<pre>(.*?)</pre>", page, re.S).group(1))
    words = shlex.split(command)
    assert words[:3] == ["decaylab", "run", "d2l-linear"] and "--lambd" in words and "--epochs" in words
    again = decaylab(lab["base"], *words[1:])
    with Store(lab["store"], create=False, readonly=True) as fresh:
        first, second = store.get_run(lab["d2l"]), fresh.get_run(again)
    assert [c.params for c in second.configs] == [c.params for c in first.configs]
    for a, b in zip(first.configs, second.configs, strict=True):
        for key, value in a.metrics.items():
            assert b.metrics[key] == pytest.approx(value, rel=1e-6)


def test_reproducing_command_of_a_sweep_spells_out_switches(tmp_path: Path) -> None:
    from decaylab.lab.store import RunRecord

    exp = get_experiment("sweep")
    raw = {o.name: o.default for o in exp.options}
    raw.update(target="/a b/setup.py:setup", lambd="0,0.1", nesterov="true", momentum="0.9")
    record = RunRecord("r", "sweep", "decaylab sweep x", {}, raw, "0.1.0", "0", "finished", 0.0, None)
    words = shlex.split(reproduce_command(record, exp))
    assert words[:3] == ["decaylab", "sweep", "/a b/setup.py:setup"]
    assert "--nesterov" in words and "--decay-bias" not in words and "--include" not in words
    assert words[words.index("--lambd") + 1] == "0,0.1" and words[words.index("--momentum") + 1] == "0.9"


# -- the slider's data -------------------------------------------------------------------------------
def test_slider_data_is_the_mean_over_seeds_of_the_store_s_curves(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["d2l"])
    (data,) = embedded_json(page)
    record = store.get_run(lab["d2l"])
    assert data["param"] == "lambd" and data["values"] == [0.0, 1.0, 3.0]
    for entry in data["entries"]:
        mine = [c for c in record.configs if c.params["lambd"] == entry["value"]]
        assert len(mine) == 2
        (setting,) = entry["settings"]
        assert setting["epoch"] == list(range(1, 21))
        for key in ("train_loss", "test_loss", "w_norm"):
            expected = np.mean([np.asarray(c.curves[key], dtype=np.float64) for c in mine], axis=0)
            np.testing.assert_allclose(setting["curves"][key], expected, rtol=1e-12)
        assert entry["final_norm"] == pytest.approx(sum(c.metrics["w_norm"] for c in mine) / 2, rel=1e-12)
    assert data["overview"]["norm"] == [e["final_norm"] for e in data["entries"]]


def _fake(n_lambda: int, seeds: int = 2, epochs: int = 3) -> list[ConfigResult]:
    out = []
    for i in range(n_lambda):
        for seed in range(seeds):
            curve = [float(i + seed + e) for e in range(epochs)]
            out.append(ConfigResult(params={"lambd": i / 10, "seed": seed, "impl": "batched"}, status="done",
                                    metrics={"w_norm": float(i), "train_loss": 1.0},
                                    curves={"epoch": list(range(1, epochs + 1)), "train_loss": curve, "w_norm": curve}))
    return out


def test_slider_of_thousands_embeds_a_capped_spread_and_reads_only_those() -> None:
    results = _fake(5000)
    read: list[int] = []

    def reader(i: int) -> dict[str, list[Any]]:
        read.append(i)
        return results[i].curves

    data = slider_data(results, reader)
    assert data is not None
    assert len(data["values"]) == 5000 and len(data["overview"]["norm"]) == 5000
    shown = [e["value"] for e in data["entries"]]
    assert len(shown) == MAX_CURVE_VALUES and shown[0] == 0.0 and shown[-1] == pytest.approx(499.9)
    assert shown == sorted(shown)
    assert len(read) == 2 * MAX_CURVE_VALUES  # the curves of the embedded values only, both seeds each
    assert f"curves of {MAX_CURVE_VALUES} of the 5000 values" in data["note"]


def test_slider_thins_long_curves_and_draws_one_line_per_setting() -> None:
    from decaylab.lab.report_slider import MAX_POINTS

    results = _fake(3, seeds=1, epochs=1200)
    for r in list(results):  # a second learning rate: a second setting per λ
        results.append(ConfigResult(params={**r.params, "lr": 0.5}, status="done", metrics=r.metrics,
                                    curves={k: [2 * v for v in vs] if k != "epoch" else vs for k, vs in r.curves.items()}))
    for r in results[:3]:
        r.params["lr"] = 0.1
    data = slider_data(results, lambda i: results[i].curves)
    assert data is not None and "thinned to at most 500 points" in data["note"]
    first = data["entries"][0]
    assert [s["label"] for s in first["settings"]] == ["lr=0.1", "lr=0.5"]
    epoch = first["settings"][0]["epoch"]
    assert len(epoch) == MAX_POINTS and epoch[0] == 1 and epoch[-1] == 1200
    curve = first["settings"][1]["curves"]["train_loss"]
    assert curve == [2.0 * (e - 1) for e in epoch]  # the values of the epochs kept, lr=0.5's own


def test_lambda_parameter_is_found_from_the_params() -> None:
    def results(params: list[dict[str, Any]]) -> list[ConfigResult]:
        return [ConfigResult(params=p) for p in params]

    assert lambda_param(results([{"lambd": 0.0, "seed": 0}, {"lambd": 3.0, "seed": 0}])) == "lambd"
    assert lambda_param(results([{"lambd": 0.0, "seed": 0}, {"lambd": 0.0, "seed": 1}])) is None  # one λ
    assert lambda_param(results([{"wd": 0.0, "lr": 1}, {"wd": 0.1, "lr": 1}])) == "wd"
    assert lambda_param(results([{"lambd": 0.0, "decoupled": 0.0}, {"lambd": 0.0, "decoupled": 0.5}])) == "decoupled"
    assert lambda_param(results([{"sigma": 0.0}, {"sigma": 1.0}])) is None
    assert lambda_param(results([{"l1": True}, {"l1": False}])) is None  # a switch is not a grid
    assert slider_data(results([{"p": 0.5}]), lambda i: {}) is None


def test_table_of_more_than_100_rows_shows_its_ends(store: Any, lab: dict[str, Any]) -> None:
    page = run_page(store, lab["long"])
    rows = _tbody_rows(page)
    assert len(rows) == 41 and '<tr class="gap">' in rows[20]
    assert "80 of 120 rows left out" in page
    (data,) = embedded_json(page)
    assert len(data["entries"]) == 120 and data["entries"][-1]["value"] == 1.0


# -- escaping and nothing to fetch ------------------------------------------------------------------
def test_hostile_strings_are_escaped(store: Any, lab: dict[str, Any]) -> None:
    for page in (run_page(store, HOSTILE_ID), comparison_page(store, [HOSTILE_ID, lab["d2l"]]), index_page(store)):
        assert HOSTILE not in page and HOSTILE_ID not in page
        assert "<script>alert" not in page and "<img src=x" not in page and "<img src=https" not in page
        tags = Parts(page).tags
        assert not [a for _, a in tags if any(k.startswith("on") for k in a)]  # no event handler got in
        assert [t for t, _ in tags].count("script") == len(Parts(page).scripts)
        for attrs, text in Parts(page).scripts:
            assert "alert(" not in text or attrs.get("id") == "plotly-js"
    page = run_page(store, HOSTILE_ID)
    assert html.escape(HOSTILE) in page and html.escape(HOSTILE_ID) in page
    assert [name for name, _ in _images(page)] == [HOSTILE_FILE]  # the figure, named by its (escaped) file name
    assert f"<figcaption>{html.escape(HOSTILE_FILE)}</figcaption>" in page


def test_json_in_a_script_cannot_close_it() -> None:
    value = {"a": "</script><!-- <b>&", "b": [math.nan, math.inf, 1.5]}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- <b>&", "b": [None, None, 1.5]}


def _pages(store: Any, lab: dict[str, Any]) -> dict[str, str]:
    return {
        "d2l": run_page(store, lab["d2l"]),
        "constraint": run_page(store, lab["constraint"]),
        "hostile": run_page(store, HOSTILE_ID),
        "comparison": comparison_page(store, [lab["d2l"], lab["long"]]),
        "index": index_page(store),
    }


def test_no_page_names_anything_to_load(store: Any, lab: dict[str, Any]) -> None:
    """Every URL in the markup is ``data:`` or ``#...``; no attribute, own script or style names an http(s)
    address or makes a request (page text may show a user's URL: it is escaped text, never loaded)."""
    for name, page in _pages(store, lab).items():
        parts = Parts(page)
        for url in resource_urls(page):
            assert url.startswith(("data:", "#")), (name, url[:80])
        code = [value for _, attrs in parts.tags for value in attrs.values()]
        for attrs, text in parts.scripts:
            if attrs.get("id") != "plotly-js":  # the library itself is checked in the browser: it requests nothing
                code.append(text)
                for call in ("fetch(", "XMLHttpRequest", "import(", "sendBeacon", "WebSocket", ".src ="):
                    assert call not in text, (name, call)
        code += re.findall(r"<style>(.*?)</style>", page, re.S)
        for text in code:
            assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text, name
        assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_comparison_page_marks_the_options_that_differ(store: Any, lab: dict[str, Any]) -> None:
    page = comparison_page(store, [lab["d2l"], lab["long"]])
    assert '<tr class="differs"><th>lambd</th><td>0,1,3</td><td>0:1:120</td></tr>' in page
    assert '<tr class="differs"><th>epochs</th><td>20</td><td>2</td></tr>' in page
    assert "<tr><th>lr</th><td>0.003</td><td>0.003</td></tr>" in page
    ids = [a["id"] for _, a in Parts(page).tags if "id" in a]
    assert len(ids) == len(set(ids))  # two runs' sliders side by side, each with its own elements
    assert len(embedded_json(page)) == 2 and page.count("<h2>Claim and verdict</h2>") == 2
    with pytest.raises(ValueError, match="two or more distinct run ids"):
        comparison_page(store, [lab["d2l"], lab["d2l"]])


def test_index_lists_every_run(store: Any, lab: dict[str, Any]) -> None:
    page = index_page(store)
    rows = _tbody_rows(page)
    assert len(rows) == len(store.list_runs()) >= 4
    for record in store.list_runs():
        assert html.escape(record.command) in page


# -- the command ---------------------------------------------------------------------------------------
def test_cli_report_writes_beside_the_run_s_outputs(cli: Any, lab: dict[str, Any]) -> None:
    code, out, err = cli("report", lab["d2l"], "--store", str(lab["store"]))
    assert code == 0, err
    path = Path(out.strip())
    assert path == lab["base"] / "runs" / lab["d2l"] / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_report_out_comparison_and_index(cli: Any, lab: dict[str, Any], tmp_path: Path) -> None:
    store = ("--store", str(lab["store"]))
    code, out, err = cli("report", lab["constraint"], "--out", "sub/mine.html", *store)
    assert code == 0 and out.strip() == "sub/mine.html" and (tmp_path / "sub" / "mine.html").is_file(), err
    code, out, err = cli("report", lab["d2l"], lab["long"], *store)
    assert code == 0 and out.strip() == f"compare-{lab['d2l']}-{lab['long']}.html", err
    assert "2 runs compared" in (tmp_path / out.strip()).read_text(encoding="utf-8")
    cli("report", lab["d2l"], *store)  # its page, linked from the index
    code, out, err = cli("report", "--all", *store)
    assert code == 0 and out.strip() == "decaylab-runs.html", err
    index = (tmp_path / "decaylab-runs.html").read_text(encoding="utf-8")
    hrefs = resource_urls(index)  # relative links to the pages written so far, none to a missing file
    assert hrefs and all(h.endswith("/report.html") and not h.startswith("/") for h in hrefs)
    assert all((tmp_path / h).resolve().is_file() for h in hrefs)


def test_cli_writes_a_hostile_id_s_page_in_the_current_directory(cli: Any, lab: dict[str, Any], tmp_path: Path) -> None:
    code, out, err = cli("report", HOSTILE_ID, "--store", str(lab["store"]))
    assert code == 0, err
    path = Path(out.strip())
    assert path.parent == Path(".") and path.name.startswith("report-r_") and (tmp_path / path).is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (("nope",), "The 'RUN_ID' parameter of decaylab report must be the id of a run in the store. Got 'nope'."),
        ((), "must be one or more run ids, or --all alone. Got 'nothing'."),
        (("RUN", "--all"), "must be one or more run ids, or --all alone"),
        (("RUN", "--out", "."), "The '--out' parameter of decaylab report must be a file path (not a directory)"),
        (("RUN", "--out", "/proc/no/such.html"), "The '--out' parameter of decaylab report must be a file that can be written"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cli: Any, lab: dict[str, Any], args: tuple[str, ...], words: str) -> None:
    args = tuple(lab["d2l"] if a == "RUN" else a for a in args)
    code, out, err = cli("report", *args, "--store", str(lab["store"]))
    assert code == 2 and out == ""
    assert err.startswith("decaylab: error: ") and err.count("\n") == 1 and words in err, err


def test_cli_without_a_store_is_one_line_and_exit_2(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("report", "x")
    assert code == 2 and err.count("\n") == 1 and "decaylab.db" in err and "Traceback" not in err
    assert not (tmp_path / "decaylab.db").exists()  # nothing created


def test_write_report_refuses_ids_with_all(store: Any, lab: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="or --all alone"):
        write_report(store, [lab["d2l"]], tmp_path / "x.html", all_runs=True)
    assert write_report(store, [lab["d2l"]], tmp_path / "x.html") == tmp_path / "x.html"
