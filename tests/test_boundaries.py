"""Module boundaries: everything offline works without the Spotify client."""
import subprocess
import sys

OFFLINE_MODULES = ("helpers.data", "helpers.layouts", "helpers.songs", "helpers.validation", "helpers.vae", "helpers.clustering", "helpers.listeners",
                   "helpers.rewards", "helpers.env", "helpers.ppo", "helpers.evaluation", "helpers.recommend",
                   "helpers.feedback", "helpers.session", "helpers.finetune", "helpers.off_policy", "helpers.drift",
                   "helpers.plots", "helpers.pipeline")


def test_offline_modules_do_not_import_spotipy():
    code = (f"import sys\nfor name in {OFFLINE_MODULES!r}:\n    __import__(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('spotipy', 'helpers')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "spotipy" not in loaded and "helpers.spotify" not in loaded and "helpers.drift" in loaded


def test_the_spotify_module_only_adds_spotify():
    code = "import sys, helpers.spotify\nprint(sorted(m for m in sys.modules if m.startswith('helpers')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "helpers.ppo" not in loaded and "helpers.recommend" not in loaded, "talking to Spotify needs no policy"


def helper_imports() -> dict[str, set[str]]:
    """Each helper module's imports of other helper modules (any `from helpers.x import` or
    `import helpers.x`, at the top, in a function or under TYPE_CHECKING)."""
    import ast

    from helpers.paths import REPO_ROOT

    graph = {}
    for path in sorted((REPO_ROOT / "helpers").glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            imported |= {name.split(".")[1] for name in names if name.startswith("helpers.")}
        graph[path.stem] = imported - {path.stem}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` (as the list of its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return [*trail[trail.index(imported):], imported] if imported in trail else [module, imported]
            if imported not in state and (cycle := visit(imported, [*trail, imported])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_helper_modules_import_each_other_even_through_others():
    graph = helper_imports()
    assert {"session", "listeners", "playback", "spotify"} <= set(graph)
    assert import_cycle(graph) is None, f"helper modules import each other: {' -> '.join(import_cycle(graph))}"


def test_the_listener_contract_imports_nothing_of_the_project_and_spotify_no_session_code():
    graph = helper_imports()
    assert graph["playback"] == set()
    assert graph["spotify"] <= {"paths", "playback"}, f"helpers.spotify imports {sorted(graph['spotify'])}"


def test_functions_with_more_than_four_parameters_take_the_rest_by_keyword():
    """So a notebook never passes a bare True or 0.05 by position (`fine_tune(..., 2e-3, True)`)."""
    import ast

    from helpers.paths import REPO_ROOT

    too_many = []
    for path in sorted((REPO_ROOT / "helpers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(positional) > 4:
                    too_many.append(f"{path.stem}.{node.name}({', '.join(positional)})")
    assert not too_many, f"put a `*` after the fourth parameter of: {too_many}"
