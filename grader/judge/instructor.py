"""The instructor's ``solutions`` package, loaded from the repository this grader comes from.

The judge's one way to the reference answers and the hidden cases. It is loaded by file
location, so nothing needs the repository on ``sys.path``; the sandbox never mounts it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPOSITORY = Path(__file__).resolve().parents[2]


def load_solutions() -> ModuleType:
    """``solutions``, with its ``attention`` (reference answers) and ``hidden_cases`` (the
    case table) imported; raises RuntimeError outside the instructor's copy of the repository."""
    folder = REPOSITORY / "solutions"
    if not (folder / "hidden_cases.py").is_file():
        raise RuntimeError(
            f"{folder} has no hidden_cases.py: the hidden tests are instructor-only; grade "
            "from the instructor's copy of the repository"
        )
    package = sys.modules.get("solutions")
    if package is None or Path(package.__path__[0]).resolve() != folder:
        spec = importlib.util.spec_from_file_location(
            "solutions", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        for stale in [name for name in sys.modules if name.startswith("solutions.")]:
            del sys.modules[stale]
        package = importlib.util.module_from_spec(spec)
        sys.modules["solutions"] = package
        spec.loader.exec_module(package)
    for name in ("attention", "hidden_cases"):
        importlib.import_module(f"solutions.{name}")
    return package
