"""Configuration parsing: ``pta/config.py`` (durations, endpoints) and ``agent/config.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, DirectoryConfig, load_config
from pta.config import parse_duration, parse_endpoint
from pta.errors import InvalidRequest
from pta.v1 import agent_pb2

URL = "ldap://ldap.example.com"
BASE_DN = "dc=example,dc=com"
BIND_DN = "cn=svc,dc=example,dc=com"
BIND_PASSWORD = "s3cret-bind-pw"


def directory(**overrides: Any) -> DirectoryConfig:
    """A valid directory with some fields replaced."""
    values: dict[str, Any] = {"urls": (URL,), "base_dn": BASE_DN} | overrides
    return DirectoryConfig(**values)


class TestParseDuration:
    """Durations in flags and files."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90", 90.0),
            ("1.5s", 1.5),
            ("250ms", 0.25),
            ("10m", 600.0),
            ("1h", 3600.0),
            ("2d", 172_800.0),
            (" 30 s ", 30.0),
            ("0.5", 0.5),
        ],
        ids=["bare-seconds", "fraction", "ms", "minutes", "hours", "days", "spaces", "bare-frac"],
    )
    def test_parses(self, text: str, seconds: float) -> None:
        """A number with an optional unit becomes seconds."""
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        "text",
        ["", "s", "0", "0s", "0.0ms", "-1s", "1.5.2s", "10x", "1H", "1e3", "1 h 2 m", "inf"],
        ids=[
            "empty",
            "unit-only",
            "zero",
            "zero-unit",
            "zero-ms",
            "negative",
            "two-dots",
            "unknown-unit",
            "upper-case-unit",
            "exponent",
            "compound",
            "inf",
        ],
    )
    def test_rejects(self, text: str) -> None:
        """Anything but a positive number with a known unit is refused."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


class TestParseEndpoint:
    """``host:port`` endpoints, IPv6 in brackets."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("localhost:443", ("localhost", 443)),
            ("127.0.0.1:0", ("127.0.0.1", 0)),
            ("[::1]:443", ("::1", 443)),
            ("[2001:db8::1]:50051", ("2001:db8::1", 50051)),
            ("broker.example.com:65535", ("broker.example.com", 65535)),
        ],
        ids=["name", "ipv4-any-port", "ipv6-loopback", "ipv6", "max-port"],
    )
    def test_parses(self, text: str, expected: tuple[str, int]) -> None:
        """Host and port are split at the last colon; IPv6 brackets are removed."""
        assert parse_endpoint(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "localhost",
            "localhost:",
            ":443",
            "localhost:65536",
            "localhost:-1",
            "localhost:https",
            "localhost:44 3",
            "[::1]",
            "[::1]:",
        ],
        ids=[
            "empty",
            "no-port",
            "empty-port",
            "no-host",
            "port-too-big",
            "negative-port",
            "named-port",
            "space-in-port",
            "ipv6-no-port",
            "ipv6-empty-port",
        ],
    )
    def test_rejects(self, text: str) -> None:
        """Without a host and a port in 0..65535 the endpoint is refused."""
        with pytest.raises(ValueError, match="host:port"):
            parse_endpoint(text)

    def test_rejects_empty_bracketed_host(self) -> None:
        """Empty brackets are no host, like an empty host before the colon."""
        with pytest.raises(ValueError, match="host:port"):
            parse_endpoint("[]:443")


class TestDirectoryConfig:
    """One directory's settings, checked when built."""

    def test_defaults(self) -> None:
        """A URL and a base DN are enough; the rest has working defaults."""
        config = directory()
        assert config.urls == (URL,)
        assert config.domains == ()
        assert config.login_attribute == "uid"
        assert (config.bind_dn, config.bind_password) == ("", "")
        assert config.pool_size >= 1
        assert config.connect_timeout > 0
        assert config.receive_timeout > 0

    def test_domains_normalised(self) -> None:
        """Domains are stored lower-case without a final dot."""
        assert directory(domains=("Example.COM.", "other.example")).domains == (
            "example.com",
            "other.example",
        )

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"urls": ()}, "ldap:// or ldaps:// URLs"),
            ({"urls": ("http://ldap.example.com",)}, "ldap:// or ldaps:// URLs"),
            ({"urls": (URL, "ldap.example.com:389")}, "ldap:// or ldaps:// URLs"),
            ({"base_dn": ""}, "base DN"),
            ({"bind_dn": BIND_DN}, "both a bind DN and a password"),
            ({"bind_password": BIND_PASSWORD}, "both a bind DN and a password"),
            ({"connect_timeout": 0.0}, "must be positive"),
            ({"receive_timeout": -1.0}, "must be positive"),
            ({"pool_size": 0}, "must be positive"),
            (
                {
                    "kind": "ad",
                    "urls": ("ldaps://dc.example.com",),
                    "ca_file": Path("ca.pem"),
                    "bind_dn": BIND_DN,
                    "bind_password": BIND_PASSWORD,
                    "password_policy_dn": "cn=default,ou=policies," + BASE_DN,
                },
                "password_policy_dn is for OpenLDAP",
            ),
        ],
        ids=[
            "no-urls",
            "http-url",
            "one-bad-url",
            "no-base-dn",
            "bind-dn-without-password",
            "password-without-bind-dn",
            "zero-connect-timeout",
            "negative-receive-timeout",
            "empty-pool",
            "policy-dn-on-ad",
        ],
    )
    def test_invalid(self, overrides: dict[str, Any], message: str) -> None:
        """A directory that could never work is refused with ValueError saying why."""
        with pytest.raises(ValueError, match=message) as caught:
            directory(**overrides)
        assert BIND_PASSWORD not in str(caught.value)

    def test_invalid_domain(self) -> None:
        """A domain that is not a DNS name is refused when the directory is built."""
        with pytest.raises(InvalidRequest):
            directory(domains=("not a domain",))

    def test_repr_hides_bind_password(self) -> None:
        """``repr`` shows the service account's DN but never its password."""
        config = directory(bind_dn=BIND_DN, bind_password=BIND_PASSWORD)
        assert BIND_PASSWORD not in repr(config)
        assert BIND_DN in repr(config)
        assert BIND_PASSWORD not in repr(AgentConfig(state_dir=Path(), directories=(config,)))

    @pytest.mark.parametrize(
        ("attribute", "username", "expected"),
        [
            ("uid", "alice@example.com", "alice"),
            ("sAMAccountName", "alice@example.com", "alice"),
            ("cn", "a@b@example.com", "a@b"),
            ("mail", "alice@example.com", "alice@example.com"),
            ("userPrincipalName", "alice@example.com", "alice@example.com"),
            ("USERPRINCIPALNAME", "Alice@Example.com.", "Alice@example.com"),  # domain normalised
        ],
        ids=["uid", "samaccountname", "uid-split-at-last-at", "mail", "upn", "upn-any-case"],
    )
    def test_login_value(self, attribute: str, username: str, expected: str) -> None:
        """UPN and mail are searched for the whole name, other attributes for the local part."""
        assert directory(login_attribute=attribute).login_value(username) == expected

    @pytest.mark.parametrize(
        ("base_dn", "expected"),
        [
            ("dc=example,dc=com", "dc=example,dc=com"),
            ("DC=Example, DC=COM", "dc=example,dc=com"),
            (" ou = People ,dc=example + x=y ", "ou=people,dc=example+x=y"),
            ("cn=a\\, b , dc=x", "cn=a\\, b,dc=x"),  # An escaped comma is part of a value.
            ("cn=a\\ ,dc=x", "cn=a\\ ,dc=x"),  # So is an escaped trailing space.
            ("o=a[b],dc=x", "o=a\\5bb\\5d,dc=x"),  # Hex-escaped: no [ or ] in an identity.
        ],
        ids=[
            "plain",
            "case-and-spaces",
            "spaces-round-separators",
            "escaped-comma",
            "escaped-space",
            "brackets-escaped",
        ],
    )
    def test_directory_id(self, base_dn: str, expected: str) -> None:
        """Two agents writing one base DN differently report one directory identity."""
        assert directory(base_dn=base_dn).directory_id == expected

    def test_hello_directories(self) -> None:
        """Each directory's domains, identity and login scope, in the configured order."""
        config = AgentConfig(
            state_dir=Path(),
            directories=(
                directory(domains=("mail.example",), login_attribute="mail"),
                directory(login_attribute="sAMAccountName"),
            ),
        )
        said = [
            (list(d.domains), d.directory_id, agent_pb2.LoginScope.Name(d.login_scope))
            for d in config.hello_directories()
        ]
        assert said == [
            (["mail.example"], BASE_DN.lower(), "LOGIN_SCOPE_FULL_NAME"),
            ([], BASE_DN.lower(), "LOGIN_SCOPE_LOCAL_PART"),
        ]


class TestAgentConfig:
    """The agent's whole configuration and its domain -> directory choice."""

    SPECIFIC = directory(urls=("ldap://dc.example.com",), domains=("example.com",))
    OTHER = directory(urls=("ldap://dc.other.example",), domains=("other.example",))
    CATCH_ALL = directory(urls=("ldap://ldap.any.example",))

    @pytest.mark.parametrize(
        ("order", "domain", "expected"),
        [
            ("catch-all-first", "example.com", "specific"),
            ("specific-first", "example.com", "specific"),
            ("catch-all-first", "other.example", "other"),
            ("catch-all-first", "third.example", "catch-all"),
            ("no-catch-all", "third.example", None),
        ],
        ids=[
            "specific-after-catch-all",
            "specific-before-catch-all",
            "second-specific",
            "falls-back-to-catch-all",
            "nothing-for-domain",
        ],
    )
    def test_directory_for(self, order: str, domain: str, expected: str | None) -> None:
        """A directory naming the domain wins over a catch-all, whatever the order."""
        named = {"specific": self.SPECIFIC, "other": self.OTHER, "catch-all": self.CATCH_ALL}
        orders = {
            "catch-all-first": (self.CATCH_ALL, self.SPECIFIC, self.OTHER),
            "specific-first": (self.SPECIFIC, self.OTHER, self.CATCH_ALL),
            "no-catch-all": (self.SPECIFIC, self.OTHER),
        }
        config = AgentConfig(state_dir=Path("/state"), directories=orders[order])
        got = config.directory_for(domain)
        assert got is (None if expected is None else named[expected])

    @pytest.mark.parametrize(
        ("directories", "max_in_flight", "message"),
        [((), 32, "at least one directory"), ((CATCH_ALL,), 0, "max in flight")],
        ids=["no-directory", "zero-in-flight"],
    )
    def test_invalid(
        self, directories: tuple[DirectoryConfig, ...], max_in_flight: int, message: str
    ) -> None:
        """A configuration without a directory or with no room for work is refused."""
        with pytest.raises(ValueError, match=message):
            AgentConfig(
                state_dir=Path("/state"), directories=directories, max_in_flight=max_in_flight
            )


class TestLoadConfig:
    """Flags over ``PTA_AGENT_*`` variables over the TOML file."""

    @pytest.fixture
    def config_file(self, tmp_path: Path) -> Path:
        """A TOML file with two directories, one with a service account."""
        password_file = tmp_path / "bind.pw"
        password_file.write_text(BIND_PASSWORD + "\r\n")
        path = tmp_path / "agent.toml"
        path.write_text(
            f"""
state_dir = "{tmp_path / "state-from-file"}"
max_in_flight = 16

[[directory]]
urls = ["ldaps://dc1.example.com", "ldaps://dc2.example.com"]
base_dn = "{BASE_DN}"
domains = ["Example.COM"]
bind_dn = "{BIND_DN}"
bind_password_file = "{password_file}"
login_attribute = "userPrincipalName"
ca_file = "{tmp_path / "ca.pem"}"
pool_size = 4
connect_timeout = 1.5

[[directory]]
ldap_url = "ldap://ldap.other.example"
base_dn = "dc=other,dc=example"
password_policy_dn = "cn=strict,ou=policies,dc=other,dc=example"
"""
        )
        return path

    def test_two_directories_from_file(self, config_file: Path, tmp_path: Path) -> None:
        """Both ``[[directory]]`` tables load, with the password read from its file."""
        config = load_config({"config": str(config_file)}, {})
        assert config.state_dir == tmp_path / "state-from-file"
        assert config.max_in_flight == 16
        first, second = config.directories
        assert first.urls == ("ldaps://dc1.example.com", "ldaps://dc2.example.com")
        assert first.domains == ("example.com",)
        assert (first.bind_dn, first.bind_password) == (BIND_DN, BIND_PASSWORD)
        assert first.login_attribute == "userPrincipalName"
        assert first.ca_file == tmp_path / "ca.pem"
        assert (first.pool_size, first.connect_timeout) == (4, 1.5)
        assert second.urls == ("ldap://ldap.other.example",)
        assert second.domains == ()
        assert (second.bind_dn, second.bind_password, second.ca_file) == ("", "", None)
        assert first.password_policy_dn == ""
        assert second.password_policy_dn == "cn=strict,ou=policies,dc=other,dc=example"
        assert config.directory_for("example.com") is first
        assert config.directory_for("elsewhere.example") is second

    def test_password_never_in_repr(self, config_file: Path) -> None:
        """The loaded configuration's ``repr`` does not show the bind password."""
        config = load_config({"config": str(config_file)}, {})
        assert BIND_PASSWORD not in repr(config)
        assert BIND_PASSWORD not in repr(config.directories)

    @pytest.mark.parametrize(
        ("option", "variable", "expected"),
        [
            ("flag", "env", "flag"),
            (None, "env", "env"),
            (None, None, "state-from-file"),
        ],
        ids=["flag-wins", "env-over-file", "file"],
    )
    def test_precedence(
        self,
        config_file: Path,
        tmp_path: Path,
        option: str | None,
        variable: str | None,
        expected: str,
    ) -> None:
        """A flag beats a ``PTA_AGENT_*`` variable, which beats the file."""
        options = {"config": str(config_file), "state_dir": option and str(tmp_path / option)}
        environ = {"PTA_AGENT_STATE_DIR": str(tmp_path / variable)} if variable else {}
        assert load_config(options, environ).state_dir == tmp_path / expected

    def test_config_path_from_environment(self, config_file: Path) -> None:
        """``PTA_AGENT_CONFIG`` names the file when no flag does."""
        config = load_config({}, {"PTA_AGENT_CONFIG": str(config_file)})
        assert len(config.directories) == 2

    def test_flags_add_catch_all(self, config_file: Path) -> None:
        """A directory given by flags serves every domain, after the file's directories."""
        options = {"config": str(config_file), "ldap_url": URL, "base_dn": BASE_DN}
        config = load_config(options, {})
        assert [d.urls for d in config.directories][-1] == (URL,)
        assert config.directories[-1].domains == ()
        assert config.directory_for("example.com") is config.directories[0]

    def test_flags_only(self, tmp_path: Path) -> None:
        """Without a file, flags and variables describe one directory."""
        config = load_config(
            {"state_dir": str(tmp_path), "ldap_url": URL},
            {"PTA_AGENT_BASE_DN": BASE_DN, "PTA_AGENT_LOGIN_ATTRIBUTE": "mail"},
        )
        (only,) = config.directories
        assert (only.urls, only.base_dn, only.login_attribute) == ((URL,), BASE_DN, "mail")

    def test_password_policy_dn_by_flag_and_variable(self, tmp_path: Path) -> None:
        """``--password-policy-dn`` (or its variable) names the catch-all's ppolicy entry."""
        policy_dn = "cn=default,ou=policies," + BASE_DN
        flags = {"state_dir": str(tmp_path), "ldap_url": URL, "base_dn": BASE_DN}
        by_flag = load_config({**flags, "password_policy_dn": policy_dn}, {})
        by_variable = load_config(flags, {"PTA_AGENT_PASSWORD_POLICY_DN": policy_dn})
        assert by_flag.directories[0].password_policy_dn == policy_dn
        assert by_variable.directories[0].password_policy_dn == policy_dn

    def test_state_dir_required(self) -> None:
        """Without a state directory from any source, loading fails."""
        with pytest.raises(ValueError, match="state-dir"):
            load_config({"ldap_url": URL, "base_dn": BASE_DN}, {})
