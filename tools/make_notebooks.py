"""Write the source notebooks (without outputs) from the cell texts in tools/nb_*.py.

Each tools/nb_<name>.py holds NAME (the path under notebooks/, without .ipynb) and CELLS.
Run `python tools/make_notebooks.py [FOLDER]` after editing one; tests check that the committed
notebooks equal what this writes.
"""

import importlib.util
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

TOOLS = Path(__file__).resolve().parent
HERE = TOOLS.parent / "notebooks"


def load_definitions() -> dict[str, list]:
    """Return NAME -> CELLS for every tools/nb_*.py."""
    found: dict[str, list] = {}
    for path in sorted(TOOLS.glob("nb_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found[module.NAME] = module.CELLS
    return found


def write(name: str, cells: list, folder: Path = HERE) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    slug = name.replace("/", "-")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{slug}-{i:02d}"
    nbformat.validate(nb)
    target = folder / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    return target


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for notebook_name, notebook_cells in load_definitions().items():
        write(notebook_name, notebook_cells, out)
