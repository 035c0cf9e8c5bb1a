"""Bookkeeping at scale (issue 15): does decaylab's own work (store, JSON, table, figures) cost more than
training? Every figure the issue asks for, measured in one run:

1. 4096 λ of ``d2l-linear``: the whole ``decaylab run`` process against ``import torch`` + the engine's
   training of the same 4096 configurations (same chunks, same threads) — goal at most 2×;
2. store growth per configuration for 100 epochs of 3 curves (the store file of that run / 4096) —
   goal at most 2 KB;
3. ``decaylab runs show`` (the table) and ``runs show --json`` of a 100,000-configuration run, written
   through the Store API with synthetic float32 curves (100 epochs × 3), not trained — goal under 5 s
   and 500 MB (peak RSS of the process);
4. 64 λ: the whole ``decaylab run`` process minus ``python -c 'import torch'`` — goal under 0.4 s;
5. with ``--ray N``: a simulated N-configuration run (1 epoch) on the local Ray backend, in-process:
   driver peak RSS, store write rate, pickled bytes of a chunk's outcomes (what a worker sends back).

Processes are timed as whole processes (wall clock), each ``--repeats`` times interleaved; every figure is
the median of its repeats (the fastest in brackets), with the 1-minute load average at the time of those
runs beside it: the machine may be shared. Peak RSS from ``wait4``. The 64-λ run is the command a user
types (``decaylab run d2l-linear --lambd 0:10:64``, default figures on, ``--quiet`` for no table), and
``python -c 'import torch'`` is timed in the same loop, right before it.

Bytecode: the processes run as an installed decaylab does, from compiled bytecode. They get
``PYTHONPYCACHEPREFIX`` (a cache in the temporary directory) and not ``PYTHONDONTWRITEBYTECODE``, and an
untimed first run of each command fills the cache; otherwise (a source checkout under
``PYTHONDONTWRITEBYTECODE=1``) every run compiles decaylab's modules again, ~0.1 s of each run quiet.
``--no-bytecode`` keeps the environment as it is.
Run: ``.venv/bin/python benchmarks/bookkeeping.py [--repeats 3] [--ray 100000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from decaylab.lab.backends import run_local
from decaylab.lab.experiments import get_experiment
from decaylab.memory import retain_freed_memory
retain_freed_memory()  # as the decaylab command does
exp = get_experiment("d2l-linear")
opts = {o.name: o.parse(o.default, o.flag, exp.name) for o in exp.options}
opts["lambd"] = exp.options[0].parse(sys.argv[1], "--lambd", exp.name)
configs = exp.configs(opts)
t2 = time.perf_counter()
with exp.thread_limit():
    size = exp.chunk_size(opts, len(configs), "batched")
chunks = [list(range(i, min(i + size, len(configs)))) for i in range(0, len(configs), size)]
done = list(run_local(exp.name, opts, configs, chunks, "batched"))
t3 = time.perf_counter()
assert all(not isinstance(o, BaseException) for _, o in done)
print(json.dumps({"import_torch": t1 - t0, "engine": t3 - t2, "chunks": len(chunks)}))
"""

SYNTHETIC = r"""
import sys, time
import numpy as np
from decaylab.results import ConfigResult
from decaylab.lab.store import Store
path, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(path)
lambdas = np.linspace(0, 10, n)
params = [{"lambd": float(l), "seed": 0, "impl": "batched"} for l in lambdas]
store.create_run("synthetic", "d2l-linear", "decaylab run d2l-linear (synthetic)", {}, {}, "0.1.0", "0", params)
rng = np.random.default_rng(0)
epoch = list(range(1, epochs + 1))
start = time.perf_counter()
for lo in range(0, n, 4096):
    batch = []
    for i in range(lo, min(lo + 4096, n)):
        curves = rng.random((3, epochs), dtype=np.float32).tolist()
        res = ConfigResult(params=params[i], curves={"epoch": epoch, "train_loss": curves[0], "test_loss": curves[1], "w_norm": curves[2]},
                           metrics={"train_loss": curves[0][-1], "test_loss": curves[1][-1], "w_norm": curves[2][-1]})
        batch.append((i, res))
    store.save_results("synthetic", batch)
store.set_status("synthetic", "finished")
print(time.perf_counter() - start)
"""

RAY = r"""
import json, pickle, resource, sys, time
import decaylab.lab.runner as runner
from decaylab.lab.experiments import get_experiment
from decaylab.memory import retain_freed_memory
from decaylab.lab.runner import RunRequest, execute
from decaylab.lab.store import Store
retain_freed_memory()
path, n = sys.argv[1], int(sys.argv[2])
exp = get_experiment("d2l-linear")
opts = {o.name: o.parse(o.default, o.flag, exp.name) for o in exp.options}
opts.update(lambd=exp.options[0].parse(f"0:10:{n}", "--lambd", exp.name), epochs=1)
store = Store(path)
stats = {"save_s": 0.0, "saved": 0, "chunk_bytes": []}
save = store.save_results
def timed_save(run_id, results):
    results = list(results)
    t = time.perf_counter(); save(run_id, results); stats["save_s"] += time.perf_counter() - t
    stats["saved"] += len(results)
store.save_results = timed_save
store_chunk = runner._store_chunk
def measured(store_, run_id, configs, chunk, outcome):
    stats["chunk_bytes"].append(len(pickle.dumps(outcome, protocol=5)))  # what a worker's result pickles to
    return store_chunk(store_, run_id, configs, chunk, outcome)
runner._store_chunk = measured
t = time.perf_counter()
record = execute(store, RunRequest(exp, opts, backend="ray", ray_cpus=2), progress=None)
wall = time.perf_counter() - t
sizes = stats["chunk_bytes"]
print(json.dumps({"wall": wall, "save_s": stats["save_s"], "saved": stats["saved"], "chunks": len(sizes),
                  "chunk_bytes_mean": sum(sizes) / len(sizes), "chunk_bytes_max": max(sizes),
                  "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "store_mb": __import__("os").path.getsize(path) / 2**20, "status": record.status}))
"""


Timed = tuple[float, float, str, float]  # wall seconds, peak RSS in MB, stdout, 1-minute load average at the end


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Timed:
    """Wall seconds, peak RSS in MB (the child's own, from ``wait4``), stdout of ``cmd`` (must exit 0) and
    the load average when it ended."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-800:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode(), os.getloadavg()[0]


def median(times: list[Timed]) -> Timed:
    """The run of median wall time (the upper one of an even count), so its RSS and output go with it."""
    return sorted(times, key=lambda t: t[0])[len(times) // 2]


def spread(times: list[Timed]) -> str:
    """``"(fastest X s, load L)"``: the fastest run, and the median load average over the runs."""
    return f"(fastest {min(t[0] for t in times):.2f} s; load {statistics.median(t[3] for t in times):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", type=int, default=100_000, help="configurations of the synthetic run")
    parser.add_argument("--ray", type=int, default=0, metavar="N", help="also simulate N configurations on Ray")
    parser.add_argument("--only", choices=("64", "show"), help="measure only the 64-λ run, or only runs show")
    parser.add_argument("--no-bytecode", action="store_true", help="run with the environment as it is (see above)")
    args = parser.parse_args()
    py = sys.executable
    cli = [py, "-m", "decaylab.lab.cli"]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = dict(os.environ)
        if not args.no_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(cwd / "pycache")
        (cwd / "engine.py").write_text(ENGINE)
        (cwd / "synthetic.py").write_text(SYNTHETIC)
        (cwd / "ray_sim.py").write_text(RAY)
        run64 = [*cli, "run", "d2l-linear", "--lambd", "0:10:64", "--quiet"]
        # untimed: fills the bytecode cache (and the OS's file cache) for every command timed below
        run([py, "-c", "import torch"], cwd, env)
        run([*run64, "--store", "warm.db", "--out", "warm"], cwd, env)
        torch_t: list[Timed] = []
        whole64: list[Timed] = []
        engine_t, whole_t, store_kb = [], [], []
        for rep in range(args.repeats if args.only != "show" else 0):
            if args.only != "64":
                engine_t.append(json.loads(run([py, "engine.py", "0:10:4096"], cwd, env)[2]))
                db = cwd / f"s{rep}.db"
                cmd = [*cli, "run", "d2l-linear", "--lambd", "0:10:4096", "--quiet", "--store", str(db), "--out", f"o{rep}"]
                whole_t.append(run(cmd, cwd, env))
                store_kb.append(db.stat().st_size / 4096 / 1024)
            torch_t.append(run([py, "-c", "import torch"], cwd, env))  # right before the run it is subtracted from
            whole64.append(run([*run64, "--store", f"t{rep}.db", "--out", f"p{rep}"], cwd, env))
        if engine_t:
            eng = sorted(engine_t, key=lambda e: e["import_torch"] + e["engine"])[len(engine_t) // 2]
            whole = median(whole_t)
            results_mb = (cwd / "o0" / "results.json").stat().st_size / 2**20
        if args.only != "64":
            synth_s = float(run([py, "synthetic.py", "big.db", str(args.configs), "100"], cwd, env)[2])
            big_mb = (cwd / "big.db").stat().st_size / 2**20
            shown = "runs", "show", "synthetic", "--store", "big.db"
            show = [run([*cli, *shown], cwd, env) for _ in range(args.repeats)]
            show_json = [run([*cli, *shown, "--json"], cwd, env) for _ in range(args.repeats)]
            listing = [run([*cli, "runs", "list", "--store", "big.db"], cwd, env) for _ in range(args.repeats)]
        ray = json.loads(run([py, "ray_sim.py", "ray.db", str(args.ray)], cwd, env)[2]) if args.ray else None

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"machine: {os.cpu_count()} CPUs, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; "
          f"median of {args.repeats} (fastest and the median 1-min load average of those runs in brackets); "
          f"{'bytecode as installed' if not args.no_bytecode else 'environment as it is'}; "
          f"{time.perf_counter() - began:.0f} s in all")
    if torch_t:
        print(f"python -c 'import torch'                      {median(torch_t)[0]:7.2f} s {spread(torch_t)}")
    if engine_t:
        ratio = whole[0] / (eng["import_torch"] + eng["engine"])
        print(f"4096 λ: import torch + engine (same chunks)   {eng['import_torch'] + eng['engine']:7.2f} s "
              f"(import {eng['import_torch']:.2f} s, engine {eng['engine']:.2f} s, {eng['chunks']} chunks)")
        print(f"4096 λ: decaylab run, whole process           {whole[0]:7.2f} s {spread(whole_t)}, peak RSS "
              f"{whole[1]:.0f} MB, results.json {results_mb:.2f} MB")
        print(f"  ratio {ratio:.2f}× (goal ≤ 2×): {verdict(ratio <= 2)}")
        kb = statistics.median(store_kb)
        print(f"store per configuration, 100 epochs × 3 curves: {kb:.2f} KB (goal ≤ 2 KB): {verdict(kb <= 2)}")
    if whole64:
        # each run minus the import torch timed right before it: a pair sees the same load
        extra = statistics.median(w[0] - t[0] for w, t in zip(whole64, torch_t, strict=True))
        print(f"64 λ: decaylab run, whole process {median(whole64)[0]:.2f} s {spread(whole64)}; minus import torch "
              f"(median of the pairs) {extra:.2f} s (goal < 0.4 s): {verdict(extra < 0.4)}")
    if args.only != "64":
        print(f"{args.configs} configurations written through the Store API in {synth_s:.1f} s "
              f"({args.configs / synth_s:,.0f} configurations/s); store {big_mb:.0f} MB")
        for name, times in (("runs show (table)", show), ("runs show --json", show_json), ("runs list", listing)):
            wall, rss, _, _ = median(times)
            ok = wall < 5 and rss < 500
            print(f"  {name:<18} {wall:6.2f} s {spread(times)}, peak RSS {rss:5.0f} MB (goal < 5 s and < 500 MB): "
                  f"{verdict(ok)}")
    if ray:
        print(f"Ray, local, 2 CPUs: {args.ray} configurations × 1 epoch in {ray['wall']:.1f} s, {ray['chunks']} chunks; "
              f"driver peak RSS {ray['driver_rss_mb']:.0f} MB; store writes {ray['saved'] / ray['save_s']:,.0f} "
              f"configurations/s ({ray['save_s']:.2f} s in all, store {ray['store_mb']:.1f} MB); a chunk's outcomes "
              f"pickle to {ray['chunk_bytes_mean'] / 2**20:.2f} MB on average ({ray['chunk_bytes_mean'] / (ray['saved'] / ray['chunks']):.0f} B "
              f"a configuration), {ray['chunk_bytes_max'] / 2**20:.2f} MB at most; status {ray['status']}")


if __name__ == "__main__":
    main()
