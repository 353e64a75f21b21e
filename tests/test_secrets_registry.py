"""``tests/secrets_registry.py``, and the guard that keeps secrets out of the tests' source.

The final scan (``test_secrets.py``) looks only for registered secrets. The guard here reads
the syntax tree of every test module that can send a secret out of the test process (it
imports grpc, ldap3, subprocess, the throwaway directories or the process fixtures) and fails
on a secret written inline where a password, code or token is passed: as a keyword argument of
that name, as the matching positional argument of a helper the module or ``tests/support.py``
defines (``sign_in(user, password)``, ``item(id, user, password)``, ...), as a ``parametrize``
value of that name, or through a name bound to such a literal (``WRONG = "x"``,
``USERS = {"bob": "..."}``), also when imported from another test module. Unit tests whose
secrets never leave the process (the policy, the repeat memory, the wire encoding) are not
read. The helpers that send (``tests/support.py``) check at run time what the guard cannot see.
"""

from __future__ import annotations

import ast
import hashlib
import textwrap
from pathlib import Path

import pytest

from pta import tokens
from tests import secrets_registry
from tests.secrets_registry import known, secret

TESTS = Path(__file__).resolve().parent
#: Parameter and keyword names that carry a secret.
SECRET_NAMES = frozenset(
    {"password", "old_password", "new_password", "old", "new", "code", "secret", "token", "stdin"}
)
#: The registry itself is where secrets are made.
EXEMPT = frozenset({"secrets_registry.py"})
#: Imports through which a module can send a secret out of the test process.
WIRE = frozenset(
    {"grpc", "grpc.aio", "ldap3", "subprocess", "tooling.slapd", "tooling.samba", "tests.support"}
    | {"tests.conftest"}
)
#: Helpers every test module may call (their definitions are read for parameter names).
SHARED = ("support.py", "conftest.py")

_Bindings = dict[str, list[ast.expr]]


def _bindings(tree: ast.Module) -> _Bindings:
    """Every expression assigned to a plain name anywhere in the module."""
    found: _Bindings = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(value)
    return found


def _params(*trees: ast.Module) -> dict[str, list[list[str]]]:
    """The positional parameter names of every function these modules define, by name."""
    found: dict[str, list[list[str]]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                if names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                found.setdefault(node.name, []).append(names)
    return found


class _Module:
    """One test module's source, resolving names through its imports from other test modules."""

    def __init__(self, name: str, tree: ast.Module, modules: dict[str, _Module]) -> None:
        self.name, self.tree, self._modules = name, tree, modules
        self.bindings = _bindings(tree)
        self.imported: dict[str, tuple[str, str]] = {
            alias.asname or alias.name: (node.module, alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.")
            for alias in node.names
            if node.module is not None
        }

    def bound(self, name: str) -> list[tuple[_Module, ast.expr]]:
        """What ``name`` is assigned, here or in the test module it is imported from."""
        if name in self.imported:
            module, original = self.imported[name]
            other = self._modules.get(module.removeprefix("tests.").replace(".", "/") + ".py")
            return other.bound(original) if other is not None else []
        return [(self, value) for value in self.bindings.get(name, [])]

    def inline(self, expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``expr`` is (or is bound to) a secret written inline, not a registry call."""
        parts: list[ast.expr] = []
        match expr:
            case ast.Constant(value=str() as text):
                return bool(text.strip())  # A newline after a password is no secret.
            case ast.JoinedStr(values=values):  # f"guess-{n}": its text is written inline.
                parts = [v.value if isinstance(v, ast.FormattedValue) else v for v in values]
            case ast.BinOp(left=left, right=right) | ast.IfExp(body=left, orelse=right):
                parts = [left, right]
            case ast.Name(id=name) if name not in seen:
                return any(m.inline(v, seen | {name}) for m, v in self.bound(name))
            case ast.Subscript(value=ast.Name(id=name)) if name not in seen:
                return any(m.held(v, seen | {name}) for m, v in self.bound(name))
        return any(self.inline(part, seen) for part in parts)

    def held(self, container: ast.expr, seen: frozenset[str]) -> bool:
        """Whether a container's values (a dict's, a tuple's) hold a secret written inline."""
        match container:
            case ast.Dict(values=values):
                return any(self.held(v, seen) or self.inline(v, seen) for v in values)
            case ast.DictComp(value=value):
                return self.inline(value, seen)
            case ast.Tuple(elts=elts) | ast.List(elts=elts):
                return any(self.inline(e, seen) for e in elts[:1])  # A password comes first.
        return False


def _parametrized(call: ast.Call) -> list[tuple[str, ast.expr]]:
    """The (argument name, value) pairs of a ``parametrize`` call."""
    if len(call.args) < 2:
        return []
    names_node, values_node = call.args[0], call.args[1]
    if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
        names = [n.strip() for n in names_node.value.split(",")]
    elif isinstance(names_node, ast.Tuple | ast.List):
        names = [str(e.value) for e in names_node.elts if isinstance(e, ast.Constant)]
    else:
        return []
    if not isinstance(values_node, ast.List | ast.Tuple):
        return []
    pairs = []
    for value in values_node.elts:
        param = isinstance(value, ast.Call) and getattr(value.func, "attr", "") == "param"
        row = value.args if isinstance(value, ast.Call) and param else [value]
        if len(names) > 1:
            row = row[0].elts if len(row) == 1 and isinstance(row[0], ast.Tuple) else row
        pairs += list(zip(names, row, strict=False))
    return pairs


def sends(tree: ast.Module) -> bool:
    """Whether a module can send a secret out of the test process (see :data:`WIRE`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name in WIRE for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module in WIRE:
            return True
    return False


def inline_secrets(sources: dict[str, str]) -> list[str]:
    """Where secrets are written inline in these modules (relative path -> source).

    Returns:
        ``path:line: what`` for each, sorted.
    """
    trees = {path: ast.parse(text, filename=path) for path, text in sources.items()}
    modules: dict[str, _Module] = {}
    modules.update({path: _Module(path, tree, modules) for path, tree in trees.items()})
    shared = [trees[path] for path in SHARED if path in trees]
    found = []
    for path, module in modules.items():
        if not sends(module.tree):
            continue
        params = _params(module.tree, *shared)
        for call in (n for n in ast.walk(module.tree) if isinstance(n, ast.Call)):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            checked: list[tuple[str, ast.expr]] = [
                (k.arg, k.value) for k in call.keywords if k.arg in SECRET_NAMES
            ]
            for signature in params.get(name, []):
                checked += [
                    (param, arg)
                    for param, arg in zip(signature, call.args, strict=False)
                    if param in SECRET_NAMES and not isinstance(arg, ast.Starred)
                ]
            if name == "parametrize":
                checked += [(n, v) for n, v in _parametrized(call) if n in SECRET_NAMES]
            found += [
                f"{path}:{value.lineno}: {what} of {name}()"
                for what, value in checked
                if module.inline(value)
            ]
    return sorted(set(found))


def _test_sources() -> dict[str, str]:
    return {
        str(path.relative_to(TESTS)): path.read_text()
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in EXEMPT
    }


class TestGuard:
    """No test module writes a secret inline."""

    def test_no_inline_secret_in_the_suite(self) -> None:
        """Every password, code and token the tests pass comes from the registry."""
        assert inline_secrets(_test_sources()) == []

    @pytest.mark.parametrize(
        "source",
        [
            'broker.sign_in("alice@example.com", "Guess-1")',
            'broker.sign_in("alice@example.com", f"guess-{n}")',
            'broker.sign_in("alice@example.com", "x" * 1025)',
            'WRONG = "Wrong-pw"\nbroker.sign_in("alice@example.com", WRONG)',
            'USERS = {"bob": "Bob-pw"}\nbroker.sign_in("bob@example.com", USERS["bob"])',
            'Request(username="a@b.c", password="pw")',
            'Change(old_password=OLD, new_password="New-pw-1")',
            '_complete(guard, challenge, "000000")',
            'signin_cli(broker, "a@b.c", "Pw-1\\n")',
            '@pytest.mark.parametrize(("username", "password"), [("a@b.c", "pw")])\ndef t(): ...',
            '@pytest.mark.parametrize("password", ["pw"])\ndef t(): ...',
        ],
        ids=[
            "literal",
            "f-string",
            "repeated",
            "name",
            "dict-value",
            "keyword",
            "new-password",
            "code",
            "stdin",
            "parametrize-tuple",
            "parametrize-single",
        ],
    )
    def test_inline_secrets_are_found(self, source: str) -> None:
        """Each way of writing a secret inline is reported, with its line."""
        helpers = textwrap.dedent(
            """
            def sign_in(self, username, password, timeout=15.0): ...
            def _complete(guard, challenge, code): ...
            def signin_cli(broker, username, stdin, *extra): ...
            """
        )
        found = inline_secrets({"support.py": helpers, "case.py": "import grpc\n" + source})
        assert len(found) == 1, found
        assert found[0].startswith("case.py:")

    @pytest.mark.parametrize(
        "source",
        [
            'broker.sign_in("alice@example.com", secret("guess"))',
            'broker.sign_in("alice@example.com", USERS["alice"])',
            'WRONG = secret("wrong")\nbroker.sign_in("a@b.c", WRONG)',
            'broker.sign_in("a@b.c", "")',
            'signin_cli(broker, "a@b.c", f"{OLD}\\n{NEW}\\n")',
            'Request(username="a@b.c", password=known("12345"))',
            'log.info("event", user="alice")',
        ],
        ids=["secret", "fixture", "bound-to-secret", "empty", "stdin-of-names", "known", "other"],
    )
    def test_registered_secrets_pass(self, source: str) -> None:
        """Secrets from the registry, empty passwords and other strings are not reported."""
        helpers = "def sign_in(self, username, password): ...\n"
        helpers += "def signin_cli(broker, username, stdin): ...\n"
        assert inline_secrets({"support.py": helpers, "case.py": "import grpc\n" + source}) == []

    def test_imported_literal_is_found(self) -> None:
        """A literal bound in another test module and imported is still written inline."""
        sources = {
            "conftest.py": 'USERS = {"bob": "Bob-pw-2?"}\n',
            "case.py": "from tests.conftest import USERS\nbroker.sign_in('b@c.d', USERS['bob'])\n",
            "support.py": "def sign_in(self, username, password): ...\n",
        }
        assert inline_secrets(sources) == ["case.py:2: password of sign_in()"]

    def test_modules_that_send_nothing_are_not_read(self) -> None:
        """A unit test of in-process logic (no grpc, ldap3, subprocess, servers) is left alone."""
        sources = {
            "support.py": "def sign_in(self, username, password): ...\n",
            "case.py": "from broker import policy\nsign_in('a@b.c', 'Guess-1')\n",
        }
        assert inline_secrets(sources) == []


class TestRegistry:
    """What the registry hands out, and what the sending helpers refuse."""

    def test_fresh_secrets_are_unique_and_keep_the_label(self) -> None:
        """Two calls never return the same value; the label's characters stay."""
        one, two = secret("Ad-pw-1!"), secret("Ad-pw-1!")
        assert one != two
        assert one.startswith("Ad-pw-1!~")
        assert secrets_registry.registered(one)
        assert secrets_registry.registered(two)

    def test_unregistered_password_is_refused(self) -> None:
        """A password the scan would not look for cannot be sent through the helpers."""
        with pytest.raises(AssertionError, match="secrets_registry"):
            secrets_registry.require("Typed-inline-1")
        secrets_registry.require("")  # An empty password is no secret.
        secrets_registry.require(known("Typed-inline-2"))
        forged = secret("pw")[:-1] + "x"
        if not secrets_registry.registered(forged):
            with pytest.raises(AssertionError):
                secrets_registry.require(forged)

    def test_enrolment_tokens_register_their_secret(self, tmp_path: Path) -> None:
        """A token's secret is registered apart: its hash is what the store keeps."""
        token = str(tokens.new_token("0" * 64))
        with pytest.raises(AssertionError):
            secrets_registry.require_token(token)
        secrets_registry.enrolment_token(token, tmp_path)
        secrets_registry.require_token(token)
        parsed = tokens.parse_token(token)
        assert secrets_registry.ENROLMENT[parsed.secret] == (tmp_path, parsed.token_id)
        assert parsed.secret not in secrets_registry.passwords()
        assert hashlib.sha256(parsed.secret.encode()).digest() == parsed.secret_hash
        secrets_registry.require_token("pta1.malformed")  # Carries no secret.
        del secrets_registry.ENROLMENT[parsed.secret]  # No broker of the run issued it.
