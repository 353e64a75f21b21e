"""The tree tells which program a module belongs to: the programs never import each other.

README.md ("Layout") gives each top-level package its program: ``pta/`` is shared by all of
them, ``broker/``, ``agent/`` and ``client/`` are ``pta-broker``, ``pta-agent`` and
``pta-signin``. The rule checked here follows from that: the programs run apart and speak only
through the gRPC contract (``proto/pta/v1/``), so none imports another, and the shared package
imports none of them (else it would not be shared, and could import in a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: package -> the top-level packages it must never import.
#: ``tooling`` (demo, bench, test directories) may use them all; none of them uses it.
FORBIDDEN = {
    "pta": {"broker", "agent", "client", "tooling"},
    "broker": {"agent", "client", "tooling"},
    "agent": {"broker", "client", "tooling"},
    "client": {"broker", "agent", "tooling"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


class TestLayering:
    """Imports respect the layout README.md describes (see the module docstring)."""

    @pytest.mark.parametrize("package", sorted(FORBIDDEN))
    def test_no_forbidden_imports(self, package: str) -> None:
        """No module of a package imports a package it must not know."""
        offenders = {
            str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
            for path in (ROOT / package).rglob("*.py")
        }
        assert {k: v for k, v in offenders.items() if v} == {}

    def test_only_directory_module_imports_ldap3(self) -> None:
        """LDAP is spoken in the agent's directory modules only (tooling is not pta).

        ``agent/ldappool.py``, ``agent/ldapconn.py`` and ``agent/ldapwire.py`` (the sign-in's
        searches and binds on the event loop, encoded by hand and SASLprepped, decoded by
        ldap3), ``agent/ldap_threads.py`` (ldap3 on worker threads) with its two users
        ``agent/password_change.py`` and ``agent/lockout_policy.py``, ``agent/preflight.py``
        (the configuration checked against the directory at start).
        """
        users = {
            str(path.relative_to(ROOT))
            for package in ("pta", "broker", "agent", "client")
            for path in (ROOT / package).rglob("*.py")
            if "ldap3" in _imports(path)
        }
        assert users <= {
            "agent/ldappool.py",
            "agent/ldapconn.py",
            "agent/ldapwire.py",
            "agent/ldap_threads.py",
            "agent/password_change.py",
            "agent/lockout_policy.py",
            "agent/preflight.py",
        }

    def test_tooling_is_not_shipped(self) -> None:
        """The wheel packages the programs and ``pta``; the tooling stays in the checkout."""
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert 'include = ["pta*", "broker*", "agent*", "client*"]' in pyproject
        assert "tooling" not in pyproject.split("[project.scripts]")[1].split("[")[0]

    def test_only_the_api_and_the_server_speak_grpc(self) -> None:
        """Below the API layer the broker speaks no gRPC.

        ``broker/api/`` (the servicers) translates between the contract and the use case,
        policy, dispatch, trust and store modules; ``broker/server.py`` and
        ``broker/server_certificates.py`` build the gRPC server and its credentials. Everything
        else is tested without a network.
        """
        allowed = {"broker/server.py", "broker/server_certificates.py"}
        speaking = {
            str(path.relative_to(ROOT))
            for path in (ROOT / "broker").rglob("*.py")
            if "grpc" in _imports(path)
        }
        assert {
            name for name in speaking if not name.startswith("broker/api/") and name not in allowed
        } == set()
        assert "broker/api/signin.py" in speaking  # the check reads real imports

    def test_only_the_stores_know_sql(self) -> None:
        """SQL lives in ``broker/store/sqlite/`` and ``broker/store/postgres/``, each its own.

        ``sqlite3`` is imported in the first only, the PostgreSQL driver (``psycopg``,
        ``psycopg_pool``) in the second only (the tooling's PostgreSQL fixture aside: it is not
        pta); everything else sees the store's protocols. Only :func:`broker.store.open_store`
        chooses an implementation, so the layers above never know which one serves them.
        """
        drivers = {"sqlite3": "broker/store/sqlite/", "psycopg": "broker/store/postgres/"}
        drivers["psycopg_pool"] = drivers["psycopg"]
        misplaced, implementation = set(), set()
        for package in ("pta", "broker", "agent", "client"):
            for path in (ROOT / package).rglob("*.py"):
                name = str(path.relative_to(ROOT))
                for driver in _imports(path) & drivers.keys():
                    if not name.startswith(drivers[driver]):
                        misplaced.add((name, driver))
                if name.startswith(("broker/store/sqlite/", "broker/store/postgres/")):
                    continue
                tree = ast.parse(path.read_text(), filename=name)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        ("broker.store.sqlite", "broker.store.postgres")
                    ):
                        implementation.add(name)
        assert misplaced == set()
        assert implementation == {"broker/store/__init__.py"}
        assert "psycopg" in _imports(ROOT / "broker/store/postgres/db.py")  # it reads imports

    def test_no_import_cycle(self) -> None:
        """No module of the programs imports, however indirectly, a module that imports it.

        Imports under ``TYPE_CHECKING`` count too: a cycle of types is still two modules that
        cannot be read apart. A package's own ``__init__`` is not an edge from its modules.
        """
        graph = _module_graph()
        assert _cycles(graph) == []
        assert "broker.api.signin" in graph  # the check reads real modules


def _module_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from x import name`` may name a module)."""
    modules: dict[str, Path] = {}
    for package in ("pta", "broker", "agent", "client"):
        for path in (ROOT / package).rglob("*.py"):
            if "v1" in path.relative_to(ROOT).parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = {d for d in deps if d != name and not name.startswith(f"{d}.")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:  # noqa: C901 - Tarjan, whole
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
