# Install scratchae only where it is not importable yet (Colab, a bare kernel).
# A no-op after `pip install -e ".[dev]"`.
import importlib.util, pathlib, subprocess, sys

if importlib.util.find_spec("scratchae") is None:
    here = pathlib.Path.cwd().resolve()
    clone = next((p for p in (here, *here.parents)
                  if (p / "setup.cfg").is_file() and (p / "scratchae").is_dir()), None)
    SOURCE = str(clone) if clone else "git+https://github.com/<owner>/scratchae.git"  # your clone's URL
    if "<owner>" in SOURCE:
        raise RuntimeError("scratchae is not installed: set SOURCE above to the git URL of the repository")
    spec = f"scratchae[plots] @ {SOURCE}" if SOURCE.startswith("git+") else f"{SOURCE}[plots]"
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])
    importlib.invalidate_caches()
