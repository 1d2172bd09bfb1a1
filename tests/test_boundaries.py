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
