"""The database layer's boundary, read from the source: only ``luigi_pipelines.db`` runs statements on a cursor and reads
psycopg2's error classes and diagnostics (the rest asks ``db`` functions, and gets the project's errors from
``db.translate``), and the savepoint pattern exists once (``db.attempt``). The dev stack (``devstack``: the demo's
seeding) is no product module and is left out."""
from __future__ import annotations

import ast
import pathlib

import luigi_pipelines

PACKAGE = pathlib.Path(luigi_pipelines.__file__).parent
_DIAGNOSTICS = {"cursor", "diag", "pgcode", "pgerror"}
_SAVEPOINTS = {"savepoint", "rollback_to_savepoint", "release_savepoint"}


def product_modules(root: pathlib.Path = PACKAGE) -> dict[str, ast.Module]:
    """Every module of the package but the dev stack, by its path under ``root``."""
    return {str(path.relative_to(root)): ast.parse(path.read_text(), str(path)) for path in sorted(root.rglob("*.py"))
            if path.relative_to(root).parts[0] != "devstack"}


def database_access(modules: dict[str, ast.Module]) -> list[str]:
    """Where a module outside ``db/`` uses a cursor, an error's diagnostics or ``psycopg2.errors``."""
    found = []
    for name, tree in modules.items():
        if name.startswith("db/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and (node.attr in _DIAGNOSTICS or (
                    node.attr == "errors" and isinstance(node.value, ast.Name) and node.value.id == "psycopg2")):
                found.append(f"{name}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("psycopg2.errors") for a in node.names):
                found.append(f"{name}:{node.lineno} import psycopg2.errors")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("psycopg2") and (
                    node.module != "psycopg2" or any(a.name == "errors" for a in node.names)) and node.module not in (
                    "psycopg2.sql", "psycopg2.extensions"):
                found.append(f"{name}:{node.lineno} from {node.module} import")
    return found


def savepoint_users(modules: dict[str, ast.Module]) -> list[str]:
    """The modules that call a savepoint statement's builder."""
    return sorted({name for name, tree in modules.items() for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr in _SAVEPOINTS)
        or (isinstance(node.func, ast.Name) and node.func.id in _SAVEPOINTS))})


def test_only_the_database_layer_touches_cursors_and_psycopg2_errors():
    assert database_access(product_modules()) == []


def test_the_savepoint_pattern_exists_once():
    assert savepoint_users(product_modules()) == ["db/transaction.py"]
