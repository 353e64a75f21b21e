"""The AdminService end to end: real broker, agent and slapd, the real grpcurl and the CLI.

An administrator's certificate is made by ``pta-broker admin issue``; with it the real grpcurl
(reflection on the agent endpoint) and ``pta-broker --broker --admin-cert`` manage the broker,
and the remote CLI prints exactly what the local one prints. Agent certificates, a foreign
CA's, none at all and a revoked administrator are refused; every call is audited, never with a
secret. The same against two brokers sharing a PostgreSQL store: any broker answers, and a
revocation holds at both.
"""

from __future__ import annotations

import datetime
import json
import shutil
import stat
import subprocess
import urllib.parse
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography import x509

from broker.trust.administrators import ADMIN_URI_PREFIX, name_of
from broker.trust.ca import CertificateAuthority
from pta import tls, tokens
from pta.v1 import admin_pb2, outcome_pb2
from tests.cluster import start_cluster
from tests.secrets_registry import enrolment_token, known, secret
from tests.support import BIN, AgentProcess, BrokerProcess, enrol_cli, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tooling.postgres import Postgres
    from tooling.slapd import Slapd

TENANT, DOMAIN = "adm", "adm.example"
Outcome = outcome_pb2.Outcome


def issue(broker: BrokerProcess, name: str, out: Path, *extra: str) -> Path:
    """``pta-broker admin issue`` on the broker's machine: its data dir (and store)."""
    where = ("--store", broker.store) if broker.store else ()
    done = subprocess.run(
        [str(BIN / "pta-broker"), "admin", "issue", "--name", name, "--out", str(out),
         "--data-dir", str(broker.data_dir), *where, *extra],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def remote(
    broker: BrokerProcess, cert_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A ``pta-broker`` command at the broker's AdminService."""
    done = subprocess.run(
        [str(BIN / "pta-broker"), *args, "--broker", broker.agent, "--admin-cert", str(cert_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def grpcurl(
    broker: BrokerProcess, cert_dir: Path | None, *args: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real grpcurl at the agent endpoint, with an administrator's certificate or none."""
    command = [str(BIN / "grpcurl"), "-cacert", str(broker.ca_file)]
    if cert_dir is not None:
        command += ["-cert", str(cert_dir / "admin.pem"), "-key", str(cert_dir / "admin.key")]
    if data is not None:
        command += ["-d", data]
    return subprocess.run(
        [*command, broker.agent, *args], capture_output=True, text=True, timeout=30, check=False
    )


def audited(broker: BrokerProcess, method: str, serial: str = "") -> list[dict[str, Any]]:
    """The broker's ``admin.call`` audit lines for ``method`` (by ``serial``, if given).

    A refusal's status can reach the caller a moment before its audit line is written: the
    line is waited for.
    """

    def lines() -> list[dict[str, Any]]:
        return [
            e
            for e in broker.log_events("admin.call")
            if e["method"] == method and (not serial or e["serial"] == serial)
        ]

    wait_for(lines, timeout=5, what=f"an admin.call line for {method}")
    return lines()


@pytest.fixture(scope="module")
def served(run_dir: Path) -> Iterator[BrokerProcess]:
    """A broker with an MFA key and tenant ``adm``."""
    key = run_dir / "admin-mfa.key"
    assert BrokerProcess.cli_without_data("mfa", "keygen", str(key)).returncode == 0
    broker = BrokerProcess.start(run_dir, "broker-admin", "--mfa-key-file", str(key))
    broker.add_tenant(TENANT, DOMAIN)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def ops(served: BrokerProcess, run_dir: Path) -> Path:
    """The administrator ``ops``'s certificate directory."""
    return issue(served, "ops", run_dir / "admin-ops")


@pytest.fixture(scope="module")
def agent(served: BrokerProcess, slapd: Slapd) -> Iterator[AgentProcess]:
    """An agent of ``adm`` checking passwords in slapd."""
    process = AgentProcess.start(served, slapd, TENANT, "agent-admin")
    yield process
    process.stop()


class TestIssue:
    """``pta-broker admin issue``: a key only its owner reads, a certificate with the role."""

    def test_files_and_role(self, served: BrokerProcess, ops: Path) -> None:
        """Key 0600 in a 0700 directory; the certificate carries the role and the name."""
        assert stat.S_IMODE(ops.stat().st_mode) == 0o700
        assert stat.S_IMODE((ops / "admin.key").stat().st_mode) == 0o600
        cert = tls.load_cert((ops / "admin.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ADMIN_URI_PREFIX + "ops"]
        listed = json.loads(served.cli("admin", "list", "--json").stdout)
        assert [(a["name"], a["revoked"]) for a in listed] == [("ops", False)]

    def test_agent_certificates_never_carry_the_role(self, agent: AgentProcess) -> None:
        """What the CA signs for an agent names an agent, never an administrator."""
        cert = tls.load_cert((agent.state_dir / "tls.pem").read_bytes())
        assert name_of(cert) is None
        assert tls.agent_identity(cert) == (TENANT, agent.agent_id)

    def test_a_key_is_never_replaced(self, served: BrokerProcess, ops: Path) -> None:
        """Issuing into a directory that holds a key is refused in one line."""
        done = served.cli("admin", "issue", "--name", "ops", "--out", str(ops), check=False)
        assert done.returncode == 1
        assert "is never replaced" in done.stderr


class TestGrpcurl:
    """What the README shows: grpcurl with the administrator's certificate."""

    def test_reflection_lists_the_service(self, served: BrokerProcess, ops: Path) -> None:
        """The agent endpoint reflects the AdminService (its handshake needs a certificate)."""
        listed = grpcurl(served, ops, "list")
        assert "pta.v1.AdminService" in listed.stdout.split(), listed.stderr

    def test_calls(self, served: BrokerProcess, ops: Path) -> None:
        """Add a tenant, list it, make a token that enrols an agent: all through grpcurl."""
        added = grpcurl(
            served, ops, "pta.v1.AdminService/AddTenant",
            data='{"name": "viacurl", "domains": ["viacurl.example"]}',
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout) == {"name": "viacurl", "domains": ["viacurl.example"]}
        listed = json.loads(grpcurl(served, ops, "pta.v1.AdminService/ListTenants").stdout)
        assert {"name": "viacurl", "domains": ["viacurl.example"]} in listed["tenants"]
        made = grpcurl(
            served, ops, "pta.v1.AdminService/CreateToken",
            data='{"tenant": "viacurl", "ttl": "10m"}',
        )  # fmt: skip
        token = enrolment_token(json.loads(made.stdout)["token"], served.data_dir)
        enrolled = enrol_cli(served, token, served.data_dir.parent / "agent-viacurl")
        assert enrolled.returncode == 0, enrolled.stderr

    @pytest.mark.parametrize(
        ("call", "status", "says"),
        [
            (("CreateToken", '{"tenant": "adm", "ttl": "forever"}'), "InvalidArgument", "duration"),
            (("ShowTenant", '{"name": "nosuch"}'), "NotFound", "no tenant 'nosuch'"),
            (("AddTenant", '{"name": "Bad!", "domains": ["x.example"]}'), "InvalidArgument", ""),
            (("ClearLockouts", '{"tenant": "adm"}'), "InvalidArgument", "name one user, or all"),
        ],
        ids=["bad-duration", "unknown-tenant", "bad-name", "nobody-to-clear"],
    )
    def test_bad_input_gets_a_clear_status(
        self, served: BrokerProcess, ops: Path, call: tuple[str, str], status: str, says: str
    ) -> None:
        """Each refusal is a status with a sentence, and the broker goes on."""
        method, data = call
        done = grpcurl(served, ops, f"pta.v1.AdminService/{method}", data=data)
        assert done.returncode != 0
        assert f"Code: {status}" in done.stderr
        assert says in done.stderr
        assert served.process.poll() is None

    def test_an_oversized_request_is_refused(self, served: BrokerProcess, ops: Path) -> None:
        """70 KB of tenant name: InvalidArgument at once, audited cut short, the broker serves."""
        done = grpcurl(
            served, ops, "pta.v1.AdminService/ShowTenant", data=json.dumps({"name": "x" * 70_000})
        )
        assert "Code: InvalidArgument" in done.stderr
        assert "request too large" in done.stderr
        (line,) = [
            e for e in audited(served, "ShowTenant") if str(e.get("name", "")).startswith("xxx")
        ]
        assert len(str(line["name"])) <= 256
        assert json.loads(grpcurl(served, ops, "pta.v1.AdminService/ListTenants").stdout)


class TestRemoteCli:
    """``--broker --admin-cert``: the same commands, the same output as on the store."""

    READS = (
        ("tenant", "list", "--json"),
        ("tenant", "show", TENANT, "--json"),
        ("tenant", "show", TENANT),
        ("token", "list", "--json"),
        ("lockout", "list", "--tenant", TENANT, "--json"),
        ("mfa", "list", "--tenant", TENANT, "--json"),
        ("tenant", "banned-passwords", TENANT, "--json"),
    )

    def test_reads_print_the_same(
        self, served: BrokerProcess, ops: Path, agent: AgentProcess
    ) -> None:
        """Every read command prints byte for byte what it prints on the store."""
        wrong = served.sign_in(f"bob@{DOMAIN}", secret("Wrong-adm-1"))
        assert wrong.outcome == Outcome.INVALID_CREDENTIALS
        for command in self.READS:
            assert remote(served, ops, *command).stdout == served.cli(*command).stdout, command
        listings = (
            served.cli("agents", "list", "--json"),
            remote(served, ops, "agents", "list", "--json"),
        )
        here, there = ({a["id"]: a for a in json.loads(done.stdout)} for done in listings)
        for row in (*here.values(), *there.values()):
            row.pop("last_heartbeat")  # A second apart, maybe.
        assert here == there
        assert there[agent.agent_id]["connected"]

    @pytest.mark.usefixtures("agent")
    def test_writes_reach_the_store(self, served: BrokerProcess, ops: Path) -> None:
        """Policy, lockout clear, MFA enrol and removal, token delete: done remotely, seen here."""
        policy = json.loads(
            remote(served, ops, "tenant", "policy", TENANT, "--lockout-threshold", "9").stdout
        )
        assert policy["lockout_threshold"] == 9
        shown = json.loads(served.cli("tenant", "show", TENANT, "--json").stdout)
        assert shown["policy"]["lockout_threshold"] == 9

        served.sign_in(f"carol@{DOMAIN}", secret("Wrong-adm-2"))
        cleared = remote(served, ops, "lockout", "clear", "--tenant", TENANT, f"carol@{DOMAIN}")
        assert "counter(s)" in cleared.stdout
        locked = json.loads(served.cli("lockout", "list", "--tenant", TENANT, "--json").stdout)
        assert "carol" not in {row["user"].partition("@")[0] for row in locked}

        enrolled = remote(served, ops, "mfa", "enroll", "--tenant", TENANT, f"alice@{DOMAIN}")
        uri = urllib.parse.urlparse(enrolled.stdout.strip())
        known(urllib.parse.parse_qs(uri.query)["secret"][0])
        assert uri.scheme == "otpauth"  # Sealed with the broker's own MFA key.
        assert served.cli("mfa", "list", "--tenant", TENANT).stdout.strip()
        again = remote(
            served, ops, "mfa", "enroll", "--tenant", TENANT, f"alice@{DOMAIN}", check=False
        )
        assert again.returncode == 1
        assert "already has an authenticator" in again.stderr
        remote(served, ops, "mfa", "remove", "--tenant", TENANT, f"alice@{DOMAIN}")
        assert not served.cli("mfa", "list", "--tenant", TENANT).stdout.strip()

        token = enrolment_token(
            remote(served, ops, "token", "create", "--tenant", TENANT).stdout.strip(),
            served.data_dir,
        )
        deleted = remote(served, ops, "token", "delete", token, "--json")  # The whole token.
        token_id = json.loads(deleted.stdout)["id"]
        assert token_id not in served.cli("token", "list").stdout

    def test_mistakes_are_one_line(self, served: BrokerProcess, ops: Path) -> None:
        """An unknown tenant and a broker's public port: one sentence each, exit 1."""
        unknown = remote(served, ops, "lockout", "list", "--tenant", "nosuch", check=False)
        assert (unknown.returncode, unknown.stderr) == (1, "pta-broker: no tenant 'nosuch'\n")
        wrong_port = subprocess.run(
            [str(BIN / "pta-broker"), "tenant", "list", "--broker", served.public,
             "--admin-cert", str(ops)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert wrong_port.returncode == 1
        assert "serves no AdminService: it is the broker's agent endpoint" in wrong_port.stderr
        assert "Traceback" not in wrong_port.stderr


class TestRefused:
    """Anyone but a current administrator is refused, and the refusal is audited."""

    def test_an_agent_certificate(self, served: BrokerProcess, agent: AgentProcess) -> None:
        """The CA's certificate without the role: PERMISSION_DENIED, audited with its serial."""
        with grpc.secure_channel(served.agent, agent.credentials()) as channel:
            call = channel.unary_unary(
                "/pta.v1.AdminService/ListTenants",
                request_serializer=admin_pb2.ListTenantsRequest.SerializeToString,
                response_deserializer=admin_pb2.ListTenantsResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as refused:
                call(admin_pb2.ListTenantsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        serial = tls.serial_hex(tls.load_cert((agent.state_dir / "tls.pem").read_bytes()))
        lines = audited(served, "ListTenants", serial)
        assert [(e["administrator"], e["status"]) for e in lines] == [("", "PERMISSION_DENIED")]

    def test_no_certificate(self, served: BrokerProcess) -> None:
        """No client certificate: the handshake fails before any handler."""
        done = grpcurl(served, None, "pta.v1.AdminService/ListTenants")
        assert done.returncode != 0
        assert "Failed to dial target host" in done.stderr or "Code: Unavailable" in done.stderr

    def test_a_foreign_ca(self, served: BrokerProcess, ops: Path, tmp_path: Path) -> None:
        """An administrator certificate of another CA (role, name and all) fails the handshake."""
        foreign = CertificateAuthority.load_or_create(tmp_path)
        key = tls.new_private_key()
        cert = foreign.sign_administrator(
            key.public_key(), uri=ADMIN_URI_PREFIX + "ops", lifetime=datetime.timedelta(hours=1)
        )
        out = tmp_path / "foreign"
        out.mkdir()
        tls.write_private(out / "admin.key", tls.key_pem(key))
        tls.write_public(out / "admin.pem", tls.cert_pem(cert))
        shutil.copy(ops / "ca.pem", out / "ca.pem")
        done = remote(served, out, "tenant", "list", check=False)
        assert done.returncode == 1
        assert "cannot reach the AdminService" in done.stderr

    def test_a_revoked_administrator(self, served: BrokerProcess, run_dir: Path) -> None:
        """Revoked by name: refused from the next call on, and the call is audited."""
        leaver = issue(served, "leaver", run_dir / "admin-leaver")
        assert remote(served, leaver, "tenant", "list").returncode == 0
        revoked = served.cli("admin", "revoke", "leaver")
        assert "revoked leaver: 1 certificate(s)" in revoked.stdout
        done = remote(served, leaver, "tenant", "list", check=False)
        assert done.returncode == 1
        assert "administrator leaver was revoked" in done.stderr
        serial = tls.serial_hex(tls.load_cert((leaver / "admin.pem").read_bytes()))
        wait_for(lambda: len(audited(served, "ListTenants", serial)) == 2, timeout=5)
        assert [
            (e["administrator"], e["status"]) for e in audited(served, "ListTenants", serial)
        ] == [
            ("leaver", "OK"),
            ("", "UNAUTHENTICATED"),
        ]


class TestAudit:
    """Every call leaves one line: who, what on what, the status; never a secret."""

    @pytest.mark.usefixtures("agent")
    def test_calls_are_audited_without_secrets(self, served: BrokerProcess, ops: Path) -> None:
        """Token and authenticator answers leave their id and user in the log, not the secret."""
        token = enrolment_token(
            remote(served, ops, "token", "create", "--tenant", TENANT).stdout.strip(),
            served.data_dir,
        )
        enrolled = remote(served, ops, "mfa", "enroll", "--tenant", TENANT, f"dave@{DOMAIN}")
        uri = enrolled.stdout.strip()
        totp = known(urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0])
        created = audited(served, "CreateToken")[-1]
        assert (created["administrator"], created["tenant"], created["status"]) == (
            "ops", TENANT, "OK",
        )  # fmt: skip
        assert created["token_id"] in token
        mfa = audited(served, "EnrolMfa")[-1]
        assert (mfa["user"], mfa["status"]) == (f"dave@{DOMAIN}", "OK")
        log = served.log_path.read_text()
        assert tokens.parse_token(token).secret not in log
        assert totp not in log
        assert "otpauth" not in log


@pytest.fixture(scope="module")
def pair(run_dir: Path, postgres: Postgres) -> Iterator[list[BrokerProcess]]:
    """Two brokers of one cluster, tenant ``admpg``."""
    brokers = start_cluster(
        run_dir, ["broker-admin-pg-1", "broker-admin-pg-2"], postgres.new_database("admin")
    )
    brokers[0].add_tenant("admpg", "admpg.example")
    yield brokers
    for broker in brokers:
        broker.stop()


class TestCluster:
    """Two brokers on one PostgreSQL store: either answers, a revocation holds at both."""

    def test_any_broker_answers_and_revocation_holds_everywhere(
        self, pair: list[BrokerProcess], run_dir: Path
    ) -> None:
        """Issued at the first (CA and store), used at the second; revoked: refused at both."""
        first, second = pair
        cert_dir = issue(first, "pgops", run_dir / "admin-pgops")
        for broker in pair:
            command = ("tenant", "show", "admpg", "--json")
            assert remote(broker, cert_dir, *command).stdout == first.cli(*command).stdout
        added = remote(second, cert_dir, "tenant", "add", "viasecond", "--domain", "v2.example")
        assert "tenant viasecond owns v2.example" in added.stdout
        assert "viasecond" in json.loads(first.cli("tenant", "list", "--json").stdout)
        assert audited(second, "AddTenant")[-1]["administrator"] == "pgops"
        first.cli("admin", "revoke", "pgops")
        for broker in pair:
            refused = remote(broker, cert_dir, "tenant", "list", check=False)
            assert refused.returncode == 1
            assert "administrator pgops was revoked" in refused.stderr
