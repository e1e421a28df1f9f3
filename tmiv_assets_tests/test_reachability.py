"""Every engine definition must be reachable from product code, not only from tests.

The engine is every module under ``tmiv_assets/ml/``. The roots are every other module under
``tmiv_assets/`` (definitions, demo, defs, resources): code a user actually runs. Tests,
benchmarks and notebooks are not roots. A top-level ``def``/``class`` of an engine module is
reachable when its name is referenced by a root or by another reachable definition; module-level
assignments of engine modules (catalogs, presets) are followed when their name is reachable, and
other module-level statements always are. The analysis is name-based and uses only ``ast``.
"""

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "tmiv_assets"
ENGINE_DIR = PACKAGE_DIR / "ml"
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
IMPORTS = (ast.Import, ast.ImportFrom)


def referenced_names(node: ast.AST) -> set[str]:
    """Identifiers a piece of code refers to: names, attributes, imports, getattr(obj, "name")."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr)
        elif isinstance(sub, ast.alias):
            names.update(sub.name.split("."))
        elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "getattr"
              and len(sub.args) >= 2 and isinstance(sub.args[1], ast.Constant)
              and isinstance(sub.args[1].value, str)):
            names.add(sub.args[1].value)
    return names


def find_unreachable(root_sources: dict[str, str], engine_sources: dict[str, str]) -> list[str]:
    """Return ``"module:line name"`` for every engine definition no root can reach by name."""
    reachable = set()
    for source in root_sources.values():
        reachable |= referenced_names(ast.parse(source))

    definitions = []  # (module, line, name, node): checked and reported when unreachable
    bindings = []  # (names, node): module-level assignments, followed but never reported
    for module, source in engine_sources.items():
        for statement in ast.parse(source).body:
            if isinstance(statement, DEFINITIONS):
                definitions.append((module, statement.lineno, statement.name, statement))
            elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                bindings.append(({n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)},
                                 statement))
            elif not isinstance(statement, IMPORTS):  # imports only matter if the name is used
                reachable |= referenced_names(statement)

    pending = [(module, line, {name}, node) for module, line, name, node in definitions]
    pending += [(None, 0, names, node) for names, node in bindings]
    changed = True
    while changed:  # propagate to a fixed point
        changed = False
        for item in list(pending):
            if item[2] & reachable:
                pending.remove(item)
                reachable |= referenced_names(item[3])
                changed = True
    return [f"{module}:{line} {next(iter(names))}" for module, line, names, _ in sorted(
        (item for item in pending if item[0]), key=lambda item: item[:2])]


def _module_sources(paths) -> dict[str, str]:
    root = PACKAGE_DIR.parent
    return {".".join(p.relative_to(root).with_suffix("").parts): p.read_text(encoding="utf-8") for p in paths}


def test_every_engine_definition_is_reachable_from_product_code():
    all_modules = sorted(PACKAGE_DIR.rglob("*.py"))
    engine = _module_sources(p for p in all_modules if ENGINE_DIR in p.parents)
    roots = _module_sources(p for p in all_modules if ENGINE_DIR not in p.parents)
    assert engine and roots

    unreachable = find_unreachable(roots, engine)

    assert not unreachable, (
        f"{len(unreachable)} engine definition(s) are reachable only from tests (or from nothing); "
        "wire each into an asset/resource/job or delete it:\n  " + "\n  ".join(unreachable))


def test_checker_reports_a_definition_used_only_by_tests():
    engine = {
        "pkg.ml.core": (
            "from pkg.ml.util import helper, build\n"
            "def used_by_asset(x):\n    return helper(x)\n"
            "def used_only_by_test(x):\n    return x\n"
            "CATALOG = (build,)\n"
        ),
        "pkg.ml.util": "def helper(x):\n    return x\n\ndef build():\n    return 1\n",
    }
    roots = {"pkg.defs.assets": "from pkg.ml.core import used_by_asset, CATALOG\nused_by_asset(CATALOG)\n"}
    tests = {"pkg_tests.test_core": "from pkg.ml.core import used_only_by_test\nused_only_by_test(1)\n"}

    assert find_unreachable(roots, engine) == ["pkg.ml.core:4 used_only_by_test"]
    assert find_unreachable({**roots, **tests}, engine) == []  # counting tests as roots would hide it
