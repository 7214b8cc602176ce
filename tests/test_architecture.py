"""Architecture check: imports only go down the floors, and no module imports itself in a cycle.

The project is built in floors. A module may import a module of its own top-level package
(sideways) or of a strictly lower floor (down); nothing else:

    floor 0  utils/                                     imports nothing from the project
    floor 1  models/  losses/  data/ (incl. data/synthetic/)
             each is its own package: models, losses and data do not import each other
             (losses does not import models either: no such import existed when this test was written)
    floor 2  training/
    floor 3  main_cross_cs.py  main_cross_nyu.py  tools/  bench/  scripts/
             entry points: nothing imports them

An import between two top-level packages is also reported when either one is missing from FLOORS,
so a new folder has to be given its floor here. tests/ is not scanned; of the other folders
(data/demo/ included) only the .py files are read.

The imports are read with `ast`, never executed, so the check is fast and needs no dependency installed.
"""
import ast
import os
from pathlib import Path
from typing import NamedTuple

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

FLOORS = {
    "utils": 0,
    "models": 1,
    "losses": 1,
    "data": 1,
    "training": 2,
    "main_cross_cs": 3,
    "main_cross_nyu": 3,
    "tools": 3,
    "bench": 3,
    "scripts": 3,
}

SKIPPED_ROOT_FOLDERS = {"tests", "exps"}
SKIPPED_FOLDERS = {"__pycache__", "site-packages"}


class ProjectImport(NamedTuple):
    """One import of a project module: where it is written, who imports, and the dotted name imported."""

    path: str
    line: int
    importer: str
    imported: str


class ProjectScan(NamedTuple):
    """Every project module found under a root, and every project import they contain."""

    modules: set
    imports: list


def python_files(root):
    """Yield every .py file under root, outside tests/, exps/, hidden folders, virtualenvs and caches."""
    for folder, subfolders, files in os.walk(root):
        folder_path = Path(folder)
        subfolders[:] = sorted(
            name for name in subfolders
            if not name.startswith(".")
            and name not in SKIPPED_FOLDERS
            and not (folder_path == root and name in SKIPPED_ROOT_FOLDERS)
            and not (folder_path / name / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield folder_path / name


def module_name(root, path):
    """Dotted module name of a file: `data/synthetic/__init__.py` is `data.synthetic`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree, importer, is_package, modules):
    """Yield (line, dotted name) for every import in a parsed module, relative imports made absolute."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package_parts = importer.split(".") if is_package else importer.split(".")[:-1]
                base_parts = package_parts[:len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield node.lineno, submodule if submodule in modules else base


def scan_project(root):
    """Parse every project .py file under root and collect its project imports, inside functions too."""
    root = Path(root)
    module_paths = {module_name(root, path): path for path in python_files(root)}
    modules = set(module_paths)
    top_level_names = {module.split(".")[0] for module in modules}
    imports = []
    for importer, path in sorted(module_paths.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for line, imported in sorted(set(imported_names(tree, importer, is_package, modules))):
            if imported.split(".")[0] in top_level_names:
                imports.append(ProjectImport(path.relative_to(root).as_posix(), line, importer, imported))
    return ProjectScan(modules, imports)


def floor_violations(scan):
    """List `file:line importer -> imported` for every import that is neither sideways in its package nor down."""
    violations = []
    for project_import in scan.imports:
        importer_package = project_import.importer.split(".")[0]
        imported_package = project_import.imported.split(".")[0]
        if importer_package == imported_package:
            continue
        importer_floor = FLOORS.get(importer_package)
        imported_floor = FLOORS.get(imported_package)
        if importer_floor is None or imported_floor is None:
            reason = " (no floor assigned)"
        elif imported_floor >= importer_floor:
            reason = f" (floor {importer_floor} -> floor {imported_floor})"
        else:
            continue
        violations.append(f"{project_import.path}:{project_import.line} "
                          f"{project_import.importer} -> {project_import.imported}{reason}")
    return violations


def existing_module(dotted_name, modules):
    """The most specific module that importing dotted_name executes, or None if none of its prefixes exists."""
    parts = dotted_name.split(".")
    for length in range(len(parts), 0, -1):
        candidate = ".".join(parts[:length])
        if candidate in modules:
            return candidate
    return None


def import_graph(scan):
    """Map each project module to the set of project modules it imports."""
    graph = {module: set() for module in scan.modules}
    for project_import in scan.imports:
        target = existing_module(project_import.imported, scan.modules)
        if target is not None:
            graph[project_import.importer].add(target)
    return graph


def strongly_connected_components(graph):
    """Tarjan's algorithm, iterative: yield each strongly connected component as a set of modules."""
    index_of, lowlink, on_stack, stack = {}, {}, set(), []
    for start in sorted(graph):
        if start in index_of:
            continue
        index_of[start] = lowlink[start] = len(index_of)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index_of[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    yield component
            elif successor not in index_of:
                index_of[successor] = lowlink[successor] = len(index_of)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index_of[successor])


def cycle_through(start, component, graph):
    """Shortest chain start -> ... -> start inside one strongly connected component (breadth-first)."""
    previous = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return chain[::-1] + [start]
                if successor not in previous:
                    previous[successor] = node
                    next_frontier.append(successor)
        frontier = next_frontier
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def import_cycles(scan):
    """List every import cycle as a chain `a -> b -> a`, one per strongly connected component."""
    graph = import_graph(scan)
    cycles = []
    for component in strongly_connected_components(graph):
        start = min(component)
        if len(component) > 1 or start in graph[start]:
            cycles.append(" -> ".join(cycle_through(start, component, graph)))
    return sorted(cycles)


def write_tree(root, files):
    """Write a fake project: files maps a relative path to its source text."""
    for relative_path, source in files.items():
        path = root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


@pytest.fixture(scope="module")
def repository_scan():
    """The scan of the real repository, done once for the module."""
    return scan_project(REPO_ROOT)


def test_imports_only_go_down_the_floors(repository_scan):
    """No module imports a higher floor, another package of its own floor, or a package without a floor."""
    violations = floor_violations(repository_scan)
    assert not violations, "imports against the floors:\n" + "\n".join(violations)


def test_no_import_cycles(repository_scan):
    """No chain of project imports leads back to the module it started from."""
    cycles = import_cycles(repository_scan)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_repository_scan_finds_modules_and_imports(repository_scan):
    """The real scan sees enough of the tree to mean something."""
    edges = sum(len(targets) for targets in import_graph(repository_scan).values())
    assert len(repository_scan.modules) > 20
    assert edges > 20


def test_scanner_reports_upward_import(tmp_path):
    """A floor-0 module importing floor 2, even inside a function, is reported with its file and line."""
    write_tree(tmp_path, {
        "utils/__init__.py": "",
        "utils/a.py": "import os\n\ndef run():\n    from training.b import step\n",
        "training/b.py": "import numpy\nfrom utils import a\n",
    })
    assert floor_violations(scan_project(tmp_path)) == ["utils/a.py:4 utils.a -> training.b (floor 0 -> floor 2)"]


def test_scanner_reports_sideways_import_between_floor_one_packages(tmp_path):
    """losses importing models is reported although both are on floor 1."""
    write_tree(tmp_path, {
        "models/__init__.py": "",
        "losses/__init__.py": "",
        "losses/xtask.py": "from models import net\n",
        "models/net.py": "",
    })
    assert floor_violations(scan_project(tmp_path)) == [
        "losses/xtask.py:1 losses.xtask -> models.net (floor 1 -> floor 1)"]


def test_scanner_reports_cycle(tmp_path):
    """Two modules importing each other, one through a relative import, form a reported cycle."""
    write_tree(tmp_path, {
        "utils/__init__.py": "",
        "utils/a.py": "import utils.b\n",
        "utils/b.py": "from . import a\n",
    })
    assert import_cycles(scan_project(tmp_path)) == ["utils.a -> utils.b -> utils.a"]


def test_scanner_finds_nothing_in_clean_tree(tmp_path):
    """Imports going down, sideways within a package, and to third parties produce no report."""
    write_tree(tmp_path, {
        "utils/__init__.py": "from utils.errors import UserInputError\n",
        "utils/errors.py": "class UserInputError(Exception):\n    pass\n",
        "models/__init__.py": "from .net import Net\n",
        "models/net.py": "import torch\nfrom utils.errors import UserInputError\n",
        "training/engine.py": "from models import Net\nfrom training import options\n",
        "training/options.py": "import utils\n",
        "main_cross_cs.py": "from training.engine import Net\n",
    })
    scan = scan_project(tmp_path)
    assert len(scan.imports) == 7
    assert floor_violations(scan) == []
    assert import_cycles(scan) == []
