"""Growing a family's tuning past a winner on its grid's edge (issue 37).

After a family's ``bench.tune`` finishes, each method whose chosen ``lr`` is the smallest or largest of its lr grid
gets one more value one step past that edge on the 1, 3, 10 ladder (``1e-3,3e-3,1e-2``: ``3e-4`` below, ``3e-2``
above; then ``1e-4``, ``1e-1``), as a method key beside the suite's grid (``rwr.lr=3e-4,1e-3,3e-3,1e-2``: a method
key beats the global one), and the same ``bench.tune`` continues with ``--resume`` (only the new candidates run).
This repeats until every winner is inside its grid or a method has grown ``GROWTHS`` times (then a warning). The
suite's identity keeps the base grid; suite.json records the growths (``tuning.families.<family>.grown``,
``growths``, ``warnings``). A grid of one lr value has no edge to grow past.
"""

from __future__ import annotations

import math

from bench.harness.tuning import COMMAND_FILE, parse_grid

GROWTHS = 2
"""Growths per method at most."""
EDGE_WARNING = f"winner still on the edge after {GROWTHS} growths"


def ladder_step(value: str, up: bool) -> str | None:
    """The value of the 1, 3, 10 ladder at least a factor 2 past ``value`` (``1e-2`` up: ``3e-2``; ``1e-3`` down:
    ``3e-4``), written like the grid (``3e-4``); None for a value that is not a positive number."""
    try:
        v = float(value)
    except ValueError:
        return None
    if not (v > 0 and math.isfinite(v)):
        return None
    e = math.floor(math.log10(v))
    ladder = [(m, k) for k in range(e - 2, e + 3) for m in (1, 3)]
    if up:
        m, k = min(((m, k) for m, k in ladder if m * 10.0**k >= 2 * v * (1 - 1e-9)), key=lambda p: p[0] * 10.0**p[1])
    else:
        m, k = max(((m, k) for m, k in ladder if m * 10.0**k <= v / 2 * (1 + 1e-9)), key=lambda p: p[0] * 10.0**p[1])
    return f"{m}e{k}" if k < 0 else f"{m * 10**k}"


def lr_values(grid: dict[str, list[str]], method: str, grown: dict[str, list[str]]) -> list[str]:
    """The method's lr grid now: its own key's values (else the global ``lr``'s) and its grown ones, ascending."""
    base = grid.get(f"{method}.lr") or grid.get("lr") or []
    return sorted([*base, *grown.get(method, [])], key=float) if base else []


def edge_growth(grid_text: str, chosen: dict, grown: dict[str, list[str]]) -> tuple[dict[str, str], list[str]]:
    """Per method on its grid's edge the value to add, and a warning for each one that may grow no more."""
    grid, added, warnings = parse_grid(grid_text), {}, []
    for method, choice in (chosen or {}).items():
        values = lr_values(grid, method, grown)
        if not choice or "lr" not in choice or len(values) < 2:
            continue
        lr, low, high = float(choice["lr"]), float(values[0]), float(values[-1])
        if lr not in (low, high):
            continue
        if len(grown.get(method, [])) >= GROWTHS:
            warnings.append(f"{method}: lr={choice['lr']}, {EDGE_WARNING}")
            continue
        new = ladder_step(values[-1] if lr == high else values[0], up=lr == high)
        if new is not None:
            added[method] = new
    return added, warnings


def grown_grid(grid_text: str, grown: dict[str, list[str]]) -> str:
    """The suite's grid with a ``method.lr`` key per grown method (its whole lr grid, ascending)."""
    grid = parse_grid(grid_text)
    grid.update({f"{m}.lr": lr_values(grid, m, grown) for m in grown if lr_values(grid, m, grown)})
    return ";".join(f"{key}={','.join(values)}" for key, values in grid.items())


def with_grid(argv: list[str], grid: str) -> list[str]:
    """``argv`` (a ``bench.tune`` command) with its ``--grid`` replaced."""
    out = [f"--grid={grid}" if a.startswith("--grid=") else a for a in argv]
    return [grid if i and out[i - 1] == "--grid" else a for i, a in enumerate(out)]


def recorded_command(job) -> list[str]:
    """The tuning's command as ``bench.tune`` recorded it (what ``--resume`` must repeat; a suite begun before a
    change of the planned command keeps its own), else the planned one."""
    from bench.core.files import read_json

    path = job.out / COMMAND_FILE
    if path.is_file():
        return list(read_json(path, "delete the tuning's folder to run it again", {"argv": [str]})["argv"])
    return list(job.command)


def next_growth(grid_text: str, entry: dict, job, choice: dict | None) -> dict | None:
    """The next growth of a family's finished tuning (its suite.json ``entry``; ``choice``: the tuned file's chosen
    values), recorded into ``entry`` (``grown``, ``growths``, ``warnings``) before it runs so that a stopped one is
    run again by the suite's ``--resume``; None when every winner is inside its grid or may grow no more."""
    grown, growths = entry.setdefault("grown", {}), entry.setdefault("growths", [])
    entry.setdefault("warnings", [])
    added, warnings = edge_growth(grid_text, choice, grown)
    for line in warnings:
        if line not in entry["warnings"]:
            entry["warnings"].append(line)
            print(f"WARNING: tuning {job.family}: {line}", flush=True)
    if not added:
        return None
    for method, value in added.items():
        grown.setdefault(method, []).append(value)
    grid = grown_grid(grid_text, grown)
    growths.append(dict(added=added, grid=grid, state="to do",
                        command=["python", "-m", "bench.tune", *with_grid(recorded_command(job), grid), "--resume"]))
    print(f"tuning {job.family}: winner(s) on the grid's edge, growing it: "
          + ", ".join(f"{m} lr + {v}" for m, v in added.items()), flush=True)
    return growths[-1]
