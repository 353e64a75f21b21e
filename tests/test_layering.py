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

        ``agent/directory.py`` (ldap3's connections), ``agent/ldappool.py`` and
        ``agent/ldapconn.py`` (the sign-in's searches and binds on the event loop, decoded by
        ldap3), ``agent/preflight.py`` (the configuration checked against the directory at
        start).
        """
        users = {
            str(path.relative_to(ROOT))
            for package in ("pta", "broker", "agent", "client")
            for path in (ROOT / package).rglob("*.py")
            if "ldap3" in _imports(path)
        }
        assert users <= {
            "agent/directory.py",
            "agent/ldappool.py",
            "agent/ldapconn.py",
            "agent/preflight.py",
        }

    def test_tooling_is_not_shipped(self) -> None:
        """The wheel packages the programs and ``pta``; the tooling stays in the checkout."""
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert 'include = ["pta*", "broker*", "agent*", "client*"]' in pyproject
        assert "tooling" not in pyproject.split("[project.scripts]")[1].split("[")[0]

    @pytest.mark.parametrize(
        "module",
        [
            "dispatch",
            "jobs",
            "signin_flow",
            "policy",
            "lockout_gate",
            "lockout",
            "verdicts",
            "second_factor",
            "accounts",
            "store",
            "agent_store",
            "policy_store",
            "banned_passwords",
            "password_protection",
        ],
    )
    def test_use_case_policy_and_store_have_no_grpc(self, module: str) -> None:
        """The sign-in use case, the policy, the dispatcher and the store speak no gRPC.

        The servicers (``broker/signin.py``, ``broker/agent_link.py``) translate between the
        contract and these; everything below them is tested without a network.
        """
        assert "grpc" not in _imports(ROOT / "broker" / f"{module}.py")
