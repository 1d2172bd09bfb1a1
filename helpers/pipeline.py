"""Run the notebook chain end to end with papermill.

    python -m helpers.pipeline                 # every notebook, default settings
    python -m helpers.pipeline --quick         # small settings (what the tests run)
    python -m helpers.pipeline --from 03 -p n_clusters 12
    python -m helpers.pipeline --only 02 --only 03 --output-dir /tmp/run

Each run writes its executed notebooks to a new folder `runs/<timestamp>/` (git-ignored) and
stops at the first failing notebook, naming the notebook and the failing cell's error.

Parameters are written in plain text into the executed copies, so a parameter named like a
secret (token, secret, password) is refused: secrets come from environment variables only.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tqdm.auto import tqdm
from traitlets.config import Config

from helpers.paths import NOTEBOOKS_DIR, PNG_ENVIRONMENT, ProjectPaths, create_private
from helpers.validation import check_plain_data, shorten

# Small settings for a fast end-to-end check. A name is passed to every notebook that declares it.
QUICK_PARAMETERS: dict[str, object] = {
    "vae_epochs": 20,
    "vae_max_updates": 1_000,
    "kmeans_n_init": 2,
    "umap_sample_size": 5_000,
    "total_timesteps_candidate": 50_000,
    "total_timesteps_original": 50_000,
    "n_eval_starts": 30,
    "eval_seeds": [0],
    "finetune_timesteps": 20_000,
    "n_listeners": 1,
    "offline": True,
}


BOOLEAN_WORDS = {"true": True, "false": False}
# A value starting with one of these is meant as a literal: if it does not parse, it is an error.
LITERAL_OPENERS = set("[{(\"'")

SECRET_NAME = re.compile(r"token|secret|password", re.IGNORECASE)
SECRETS_MESSAGE = (
    "a parameter is written in plain text into the executed notebook in runs/, so secrets are not "
    "accepted as parameters: set them as environment variables instead (SPOTIPY_CLIENT_ID, "
    "SPOTIPY_CLIENT_SECRET, SPOTIPY_REDIRECT_URI, or SPOTIFY_ACCESS_TOKEN) before running the chain."
)


def kernel_config() -> Config:
    """The kernel talks to the runner over Unix sockets in Jupyter's private runtime folder (TCP
    sockets on localhost are open to every local user, and ipykernel warns about them), named
    afresh for each kernel: jupyter_client's default name, `kernel-ipc` in the working folder, is
    the same for every chain run at once, so one runner could reach another's kernel."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Config({"KernelManager": {"transport": "ipc", "ip": str(runtime / f"kernel-{uuid.uuid4().hex}-ipc")}})


# Seconds to wait for a finished cell's output to arrive (nbclient's default, 4 s, is too short for the
# cluster map's 100,000 points on a loaded machine: the chain then failed with "Timeout waiting for IOPub output").
IOPUB_TIMEOUT_SECONDS = 300


class ChainError(RuntimeError):
    """A notebook of the chain failed, or the chain was asked for something it does not have."""


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook: where its copy is and how long it took."""

    notebook: Path
    executed_copy: Path
    seconds: float


def discover_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chain's notebooks, `NN_name.ipynb`, in order."""
    notebooks = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ChainError(f"no notebooks named NN_name.ipynb in {notebooks_dir}")
    return notebooks


def select_notebooks(notebooks: list[Path], only: list[str] | None = None,
                     start: str | None = None) -> list[Path]:
    """Keep the notebooks numbered in `only`, or those from number `start` on."""
    numbers = [nb.name[:2] for nb in notebooks]
    for number in [*(only or []), *([start] if start else [])]:
        if number.zfill(2) not in numbers:
            raise ChainError(f"no notebook numbered {number!r}; the chain has {', '.join(numbers)}")
    if only:
        wanted = {number.zfill(2) for number in only}
        return [nb for nb in notebooks if nb.name[:2] in wanted]
    if start:
        return [nb for nb in notebooks if nb.name[:2] >= start.zfill(2)]
    return notebooks


def parse_value(text: str, name: str = "the parameter") -> object:
    """A command-line parameter value: a Python literal (3, 0.5, True, None, [1, 2], {'a': 1}) or a
    string; `true`/`false` in any case are booleans. Raises ChainError, naming the parameter, for
    text that looks like a literal but does not parse (it starts with [, {, ( or a quote) and for
    a literal that is not plain data (bytes, tuples, sets, non-string keys: see
    `helpers.validation.check_plain_data`), since papermill writes such values as unescaped code."""
    if text.strip().lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[text.strip().lower()]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if text.lstrip()[:1] in LITERAL_OPENERS:
            raise ChainError(f"-p {name}: {shorten(text, 80)!r} starts like a Python literal but does not parse; "
                             "write a list as [1, 2], a dict as {'key': 'value'}, or quote the whole text "
                             "for a string") from None
        return text
    return checked_parameters({name: value})[name]


def checked_parameters(parameters: dict[str, object]) -> dict[str, object]:
    """`parameters`, checked to be plain data (ChainError naming the parameter otherwise)."""
    for name, value in parameters.items():
        try:
            check_plain_data(value, f"parameter {name!r}")
        except ValueError as error:
            raise ChainError(str(error)) from None
    return parameters


def check_parameter_types(given: dict[str, object], defaults: dict[str, str]) -> None:
    """ChainError for a value whose notebook default is a bool but is not one, or whose default is
    a number and the value a bool (`-p greedy yes`, `-p n_clusters true`)."""
    for name, value in given.items():
        try:
            default = ast.literal_eval(defaults.get(name, "None"))
        except (ValueError, SyntaxError):
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ChainError(f"-p {name}: expected True or False (its notebook default is {default}), "
                             f"got {shorten(repr(value), 80)}")
        if isinstance(value, bool) and type(default) in (int, float):
            raise ChainError(f"-p {name}: expected a number (its notebook default is {default}), got {value}")


def refuse_secrets(parameters: dict[str, object]) -> None:
    """ChainError if a parameter's name looks like a secret (token, secret, password; any case)."""
    secrets = sorted(name for name in parameters if SECRET_NAME.search(name))
    if secrets:
        raise ChainError(f"refused the parameter(s) {secrets}: {SECRETS_MESSAGE}")


def parameter_defaults(notebook: Path) -> dict[str, str]:
    """Name -> default (as written) of each parameter in the notebook's cell tagged `parameters`."""
    import nbformat
    import papermill

    if "kernelspec" not in nbformat.read(notebook, as_version=4).metadata:
        raise ChainError(f"{notebook} has no kernelspec in its metadata: open it in Jupyter, "
                         "choose the Python 3 kernel and save it")
    return {name: spec["default"] for name, spec in papermill.inspect_notebook(str(notebook)).items()}


def declared_parameters(notebook: Path) -> set[str]:
    """Names in the notebook's cell tagged `parameters`."""
    return set(parameter_defaults(notebook))


def new_run_folder(paths: ProjectPaths) -> Path:
    """A fresh folder for this run's executed notebooks, open to its owner only (mode 0700)."""
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    folder, suffix = paths.runs / stamp, 1
    while folder.exists():
        folder, suffix = paths.runs / f"{stamp}-{suffix}", suffix + 1
    folder.mkdir(parents=True, mode=0o700)
    return folder


def run_chain(parameters: dict[str, object] | None = None, *, quick: bool = False,
              only: list[str] | None = None, start: str | None = None,
              output_dir: str | Path | None = None, progress: bool = True, png: bool = True) -> list[NotebookRun]:
    """Execute the selected notebooks in order; raise ChainError at the first failure. With `png`
    False the notebooks save their figures as interactive HTML only (no browser started)."""
    refuse_secrets(parameters or {})
    checked_parameters(parameters or {})
    paths = ProjectPaths.at(output_dir)
    chain = discover_notebooks()
    notebooks = select_notebooks(chain, only, start)
    given = {**(QUICK_PARAMETERS if quick else {}), **(parameters or {})}
    if output_dir:
        given["output_dir"] = str(paths.root)
    defaults = {nb: parameter_defaults(nb) for nb in chain}
    declared = {nb: set(names) for nb, names in defaults.items()}
    unknown = set(parameters or {}) - set().union(*declared.values())
    if unknown:
        raise ChainError(f"no notebook declares the parameter(s) {sorted(unknown)}: check the spelling")
    for notebook in notebooks:
        check_parameter_types({n: v for n, v in (parameters or {}).items() if n in declared[notebook]},
                              defaults[notebook])

    run_folder = new_run_folder(paths)
    runs: list[NotebookRun] = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb", disable=not progress)
    previous_png = os.environ.get(PNG_ENVIRONMENT)
    os.environ[PNG_ENVIRONMENT] = "1" if png else "0"  # the kernels inherit it
    try:
        for notebook in bar:
            passed = {name: value for name, value in given.items() if name in declared[notebook]}
            runs.append(_run_notebook(notebook, run_folder, passed, bar=bar, progress=progress))
    finally:
        if previous_png is None:
            os.environ.pop(PNG_ENVIRONMENT)
        else:
            os.environ[PNG_ENVIRONMENT] = previous_png
    return runs


def _run_notebook(notebook: Path, run_folder: Path, passed: dict[str, object], *, bar: tqdm,
                  progress: bool) -> NotebookRun:
    """Execute one notebook with `passed` parameters into `run_folder`; ChainError naming its failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    bar.set_postfix_str(notebook.stem)
    executed_copy = create_private(run_folder / notebook.name)  # outputs may hold listening data
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(executed_copy), parameters=passed, cwd=str(notebook.parent),
            kernel_name="python3", log_output=False,
            progress_bar={"desc": f"  {notebook.stem}", "leave": False} if progress else False,
            config=kernel_config(), iopub_timeout=IOPUB_TIMEOUT_SECONDS,
        )
    except PapermillExecutionError as error:
        raise ChainError(
            f"{notebook.name} failed in cell {error.cell_index}: {error.ename}: {error.evalue}\n"
            f"The executed copy with the full traceback is {executed_copy}"
        ) from None
    return NotebookRun(notebook, executed_copy, time.perf_counter() - started)


def summary(runs: list[NotebookRun], output_dir: str | Path | None = None) -> str:
    """What the run produced and where, for the end of `make run`."""
    paths = ProjectPaths.at(output_dir)
    lines = ["", "Notebooks executed (copies with outputs):"]
    lines += [f"  {run.notebook.name:<22} {run.seconds:6.1f} s  {run.executed_copy}" for run in runs]
    lines.append(f"  total {sum(run.seconds for run in runs):.1f} s")
    for title, folder in (("Data", paths.processed), ("Models", paths.models),
                          ("Feedback log", paths.feedback)):
        files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.exists() else []
        if files:
            lines.append(f"{title} in {folder}:")
            lines += [f"  {p.name:<34} {p.stat().st_size / 1024:9.1f} KiB" for p in files]
    if paths.figures.exists():
        html = sorted(paths.figures.glob("*.html"))
        png = sorted(paths.figures.glob("*.png"))
        lines.append(f"Figures in {paths.figures}: {len(html)} interactive HTML, {len(png)} PNG")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings, for tests")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="a parameter for every notebook that declares NAME (VALUE: a number, True/False, None, "
                             "a list, a dict with string keys, or a string)")
    parser.add_argument("--only", action="append", metavar="NN", help="run only notebook NN (repeatable)")
    parser.add_argument("--from", dest="start", metavar="NN", help="run notebooks NN and after")
    parser.add_argument("--output-dir", help="write every output below this folder instead of the repository")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-png", action="store_true",
                        help="save figures as interactive HTML only (faster; no browser needed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.only and args.start:
        print("error: use --only or --from, not both", file=sys.stderr)
        return 2
    try:
        parameters = {name: parse_value(value, name) for name, value in args.parameter}
        runs = run_chain(parameters, quick=args.quick, only=args.only, start=args.start,
                         output_dir=args.output_dir, progress=not args.no_progress, png=not args.no_png)
    except ChainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary(runs, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
