"""The scheduler's real cost: an idle tick and a rebalance night, each as fresh processes.

Idle tick: `ops-runner tick` at an instant where nothing is due (interpreter start, imports,
lock, ledger, agenda), against the floor `python -c "import pandas_market_calendars"`; the
median of several runs after a warm-up, wall time and peak RSS. Rebalance night: the two ticks
that run data_qa + decision (2025-11-28, an early close) and execution (2025-12-01) on a fresh
workbook, against the floor of one fresh process importing papermill and executing an empty
notebook in three fresh kernels; the better of two nights. Beside it, the floor with one empty
kernel per notebook the night ran. The tick starts each next notebook's kernel while the current
one runs, as a production tick does. Prints a table and, last, the `RESULT {json}` line that
run_all.py collects. A missed target is printed, not a failure.
Targets (2-core machine): idle tick within 1.5x the floor, rebalance night within 2x its floor.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = Path(sys.executable)
OPS_RUNNER = PYTHON.with_name("ops-runner")
GNU_TIME = shutil.which("time", path="/usr/bin")
RUNS, NIGHTS = 7, 2
IDLE_NOW = "2025-11-19T15:00:00Z"  # a Wednesday mid-session, once the first tick has run
EVE_NOW = "2025-11-26T21:35:00Z"  # the eve's checks, run before the night and not measured
NIGHT_NOWS = ("2025-11-28T18:35:00Z", "2025-12-01T13:05:00Z")
NIGHT_JOBS = ("data_qa", "decision", "execution")
TARGET_IDLE, TARGET_NIGHT = 1.5, 2.0
FLOOR_IMPORT = [str(PYTHON), "-c", "import pandas_market_calendars"]
# Run in a fresh process so its start and `import papermill` count, as they do for a tick.
FLOOR_KERNELS = """
import json, sys, time
started = time.perf_counter()
import papermill
imported = time.perf_counter() - started
source, folder, kernel, count = sys.argv[1:5]
runs = []
for i in range(int(count)):
    started = time.perf_counter()
    papermill.execute_notebook(source, f"{folder}/out{i}.ipynb", parameters={"x": 2},
                               kernel_name=kernel, progress_bar=False)
    runs.append(time.perf_counter() - started)
print(json.dumps({"import_s": imported, "kernel_s": runs}))
"""


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Run argv as a fresh process; return its wall seconds, peak RSS in MB and stdout.

    Raises RuntimeError when the process fails. Peak RSS comes from GNU time when present,
    else from wait4 on the child itself (RUSAGE_CHILDREN only ever grows, so deltas lie).
    """
    with tempfile.TemporaryDirectory() as scratch:
        report, out = Path(scratch, "rss"), Path(scratch, "out")
        command = [GNU_TIME, "-f", "%M", "-o", str(report), *argv] if GNU_TIME else argv
        with out.open("w") as sink:
            started = time.perf_counter()
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True)
            errors = child.stderr.read()
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {errors[-500:]}")
        peak_kb = int(report.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
        return wall, peak_kb / 1024, out.read_text()


def tick(workbook: Path, now: str) -> list[str]:
    return [str(OPS_RUNNER), "--workbook", str(workbook), "tick", "--now", now]


def prepare_workbook(workbook: Path) -> None:
    """A fresh workbook: config, the sample market and an approved baseline."""
    from ops_runner.ledger.init import init_workbook
    from ops_runner.market.calendar import open_calendar
    from ops_runner.market.prices import open_store
    from ops_runner.market.sources.sample import write_sample
    from ops_runner.ops.checks import approve_baseline
    from ops_runner.workbook.config import load_config

    workbook.mkdir(parents=True)
    init_workbook(workbook, template="demo")
    cfg = load_config(workbook)
    write_sample(open_store(cfg), calendar=open_calendar(cfg))
    approve_baseline(cfg, "bench")


def median_of_runs(argv: list[str]) -> tuple[float, float, str]:
    """Return the median wall seconds and peak MB of RUNS runs after one warm-up, and an output."""
    measure(argv)
    runs = [measure(argv) for _ in range(RUNS)]
    wall = statistics.median(run[0] for run in runs)
    return wall, statistics.median(run[1] for run in runs), runs[-1][2]


def top_imports(workbook: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Return the idle tick's 5 costliest direct imports and 5 costliest top-level packages (s)."""
    argv = [str(PYTHON), "-X", "importtime", "-m", "ops_runner.cli", *tick(workbook, IDLE_NOW)[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    direct: list[tuple[str, float]] = []
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        seconds = int(cumulative) / 1e6
        if not name.startswith("  "):
            direct.append((name.strip(), seconds))
        if "." not in name.strip():
            packages[name.strip()] = max(seconds, packages.get(name.strip(), 0.0))
    direct.sort(key=lambda item: -item[1])
    return direct[:5], sorted(packages.items(), key=lambda item: -item[1])[:5]


def job_breakdown(workbook: Path) -> list[tuple[str, float, float]]:
    """Return (job, notebook seconds, import-cell seconds) from the night's executed notebooks."""
    rows = []
    for path in sorted(workbook.glob("ledger/runs/*/*.ipynb")):
        notebook = json.loads(path.read_text())
        cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        durations = [c["metadata"].get("papermill", {}).get("duration") or 0.0 for c in cells]
        imports = sum(
            d for c, d in zip(cells, durations, strict=True) if "import " in "".join(c["source"])
        )
        rows.append((path.stem.split("-")[0], sum(durations), imports))
    return rows


def run_night(root: Path) -> tuple[float, list[float], list[float], list[tuple[str, float, float]]]:
    """Return the night's total wall s, each tick's wall s and peak MB, and its job breakdown.

    Raises RuntimeError when a job the night should run does not appear in the ticks' output.
    """
    prepare_workbook(root)
    measure(tick(root, EVE_NOW))
    walls, peaks, said = [], [], ""
    for now in NIGHT_NOWS:
        wall, peak, out = measure(tick(root, now))
        walls.append(wall)
        peaks.append(peak)
        said += out
    missing = [job for job in NIGHT_JOBS if f"{job}:" not in said]
    if missing:
        raise RuntimeError(f"the night did not run {missing}; the ticks said: {said.strip()}")
    return sum(walls), walls, peaks, job_breakdown(root)


def write_empty_notebook(path: Path) -> None:
    import nbformat

    parameters = nbformat.v4.new_code_cell("x = 1")
    parameters.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell("pass")])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)


def main() -> int:
    from ops_runner.runtime.notebooks import kernel_name

    if not OPS_RUNNER.is_file():
        print(f"benchmark skipped: no {OPS_RUNNER}")
        return 0
    kernel = kernel_name()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        idle_workbook = root / "idle"
        prepare_workbook(idle_workbook)
        first = measure(tick(idle_workbook, IDLE_NOW))[2].strip()
        idle_s, idle_mb, idle_said = median_of_runs(tick(idle_workbook, IDLE_NOW))
        floor_s, floor_mb, _ = median_of_runs(FLOOR_IMPORT)
        direct, packages = top_imports(idle_workbook)

        nights = [run_night(root / f"night{n}") for n in range(NIGHTS)]
        night_s, tick_walls, tick_peaks, breakdown = min(nights, key=lambda night: night[0])
        write_empty_notebook(root / "empty.ipynb")
        floors = []
        for n in range(NIGHTS):
            folder = root / f"floor{n}"
            folder.mkdir()
            source = str(root / "empty.ipynb")
            argv = [str(PYTHON), "-c", FLOOR_KERNELS, source, str(folder), kernel, "3"]
            wall, _, out = measure(argv)
            floors.append((wall, json.loads(out.strip().splitlines()[-1])))
        kernels_s, kernels_detail = min(floors, key=lambda floor: floor[0])
        # The second floor: one empty kernel per notebook the night ran (its audit too).
        (root / "floor-each").mkdir()
        argv = [str(PYTHON), "-c", FLOOR_KERNELS, str(root / "empty.ipynb"),
                str(root / "floor-each"), kernel, str(len(breakdown))]  # fmt: skip
        each_s = measure(argv)[0]

    idle_ratio_s, idle_ratio_mb = idle_s / floor_s, idle_mb / floor_mb
    night_ratio, each_ratio = night_s / kernels_s, night_s / each_s
    print(f"first tick at {IDLE_NOW}: {first}")
    print(f"measured idle tick said: {idle_said.strip()}")
    if "ran" in idle_said:
        print("WARNING: the measured tick ran something; it was not idle")
    print(f"peak RSS from {'GNU time' if GNU_TIME else 'wait4'}; medians of {RUNS} runs")
    print("idle tick's costliest direct imports: " + ", ".join(f"{n} {s:.2f} s" for n, s in direct))
    print("idle tick's costliest packages: " + ", ".join(f"{n} {s:.2f} s" for n, s in packages))
    print(f"rebalance night: better of {NIGHTS}, all {', '.join(f'{n[0]:.1f} s' for n in nights)}")
    for job, notebook_s, import_s in breakdown:
        print(f"  {job:<10} notebook {notebook_s:5.1f} s, of which import cell {import_s:4.1f} s")
    print(
        f"floor: import papermill {kernels_detail['import_s']:.2f} s, empty kernels "
        + ", ".join(f"{s:.2f}" for s in kernels_detail["kernel_s"])
        + f" s (kernel {kernel})"
    )
    print()
    table = [
        ("idle tick wall s (median)", f"{idle_s:.2f}", ""),
        ("import pandas_market_calendars wall s", f"{floor_s:.2f}", ""),
        ("idle tick / floor, wall", f"{idle_ratio_s:.2f}x", f"<= {TARGET_IDLE:g}x"),
        ("idle tick peak RSS MB (median)", f"{idle_mb:.0f}", ""),
        ("import pandas_market_calendars peak MB", f"{floor_mb:.0f}", ""),
        ("idle tick / floor, peak RSS", f"{idle_ratio_mb:.2f}x", f"<= {TARGET_IDLE:g}x"),
        ("rebalance tick wall s (checks+qa+decision)", f"{tick_walls[0]:.2f}", ""),
        ("execution tick wall s", f"{tick_walls[1]:.2f}", ""),
        ("rebalance night wall s (2 ticks)", f"{night_s:.2f}", ""),
        ("rebalance night peak RSS MB (max tick)", f"{max(tick_peaks):.0f}", ""),
        ("papermill + 3 empty kernels wall s", f"{kernels_s:.2f}", ""),
        ("rebalance night / floor, wall", f"{night_ratio:.2f}x", f"<= {TARGET_NIGHT:g}x"),
        (
            f"papermill + {len(breakdown)} empty kernels wall s (one per notebook)",
            f"{each_s:.2f}",
            "",
        ),
        ("rebalance night / that floor, wall", f"{each_ratio:.2f}x", ""),
    ]
    width = max(len(name) for name, _, _ in table)
    for name, value, target in table:
        print(f"{name.ljust(width)}  {value:>8}  {target}")
    idle_met = max(idle_ratio_s, idle_ratio_mb) <= TARGET_IDLE
    print(f"idle target {'met' if idle_met else 'NOT met'}")
    print(f"rebalance night target {'met' if night_ratio <= TARGET_NIGHT else 'NOT met'}")
    idle, night = f"<= {TARGET_IDLE:g}x", f"<= {TARGET_NIGHT:g}x"
    result = [
        {"metric": "idle tick wall", "value": idle_s, "unit": "s", "target": ""},
        {"metric": "idle tick / floor wall", "value": idle_ratio_s, "unit": "x", "target": idle},
        {"metric": "idle tick peak RSS", "value": idle_mb, "unit": "MB", "target": ""},
        {"metric": "idle tick / floor RSS", "value": idle_ratio_mb, "unit": "x", "target": idle},
        {"metric": "rebalance night wall", "value": night_s, "unit": "s", "target": ""},
        {"metric": "3 empty kernels wall", "value": kernels_s, "unit": "s", "target": ""},
        {"metric": "rebalance night / floor", "value": night_ratio, "unit": "x", "target": night},
        {
            "metric": "rebalance night / one empty kernel per notebook",
            "value": each_ratio,
            "unit": "x",
            "target": "",
        },
    ]
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
