"""``pta-signin``: sign a user in through the broker and print the outcome.

When the organisation wants a second factor (MFA_REQUIRED), it asks for the code from the
user's authenticator app (with --password-stdin: the line after the password) and finishes the
sign-in with it. On SUCCESS, --json prints the signed token too (or --token alone).

Exit codes (stable, for scripts):
   0  SUCCESS                 10  INVALID_CREDENTIALS     11  PASSWORD_EXPIRED
  12  PASSWORD_MUST_CHANGE    13  ACCOUNT_LOCKED          14  ACCOUNT_DISABLED
  15  ACCOUNT_EXPIRED         16  ACCOUNT_RESTRICTED      17  PASSWORD_REJECTED
  18  LOCKED_BY_POLICY (too many failures: wait)          19  any other outcome
  20  UNAVAILABLE (no agent, directory down)              21  DEADLINE_EXCEEDED
  22  INVALID_ARGUMENT        23  NOT_FOUND (no organisation owns the domain)
  24  RESOURCE_EXHAUSTED      25  UNAUTHENTICATED / PERMISSION_DENIED
  26  FAILED_PRECONDITION (the MFA challenge expired: sign in again)
  29  any other gRPC status    2  usage error (a bad flag, no CA file, no password given)
  30  CHANGE_REFUSED (the directory refused the change itself: ask an administrator)
 130  interrupted (Ctrl-C)

--json prints the response with the contract's own field names (as grpcurl and the README
show them: ``outcome``, ``request_id``, ``message``, ``token``, ``token_expires_at``,
``mfa_challenge_id``, ``mfa_expires_in_seconds``, ``retry_after_seconds``), every field
present, numbers as numbers; a failure prints ``{"status": "...", "message": "..."}``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from pta import failover
from pta.v1 import outcome_pb2, signin_pb2, signin_pb2_grpc

if TYPE_CHECKING:
    from google.protobuf.message import Message

Outcome = outcome_pb2.Outcome
OUTCOME_EXIT: dict[int, int] = {
    Outcome.SUCCESS: 0,
    Outcome.INVALID_CREDENTIALS: 10,
    Outcome.PASSWORD_EXPIRED: 11,
    Outcome.PASSWORD_MUST_CHANGE: 12,
    Outcome.ACCOUNT_LOCKED: 13,
    Outcome.ACCOUNT_DISABLED: 14,
    Outcome.ACCOUNT_EXPIRED: 15,
    Outcome.ACCOUNT_RESTRICTED: 16,
    Outcome.PASSWORD_REJECTED: 17,
    Outcome.LOCKED_BY_POLICY: 18,
    Outcome.CHANGE_REFUSED: 30,
}
OTHER_OUTCOME_EXIT = 19
STATUS_EXIT: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAVAILABLE: 20,
    grpc.StatusCode.DEADLINE_EXCEEDED: 21,
    grpc.StatusCode.INVALID_ARGUMENT: 22,
    grpc.StatusCode.NOT_FOUND: 23,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 24,
    grpc.StatusCode.UNAUTHENTICATED: 25,
    grpc.StatusCode.PERMISSION_DENIED: 25,
    grpc.StatusCode.FAILED_PRECONDITION: 26,
}
OTHER_STATUS_EXIT = 29
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pta-signin",
        description="Sign a user in through a pta broker.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("username", help="user@domain")
    parser.add_argument(
        "--broker",
        required=True,
        help="the broker's public host:port, several separated by commas, or one DNS name "
        "with several addresses (a gRPC dns: target is taken as it is): calls are spread over "
        "them, and one refused before any agent saw it goes to the next",
    )
    parser.add_argument(
        "--server-name",
        default="",
        help="the name every broker's certificate carries (pta-broker serve --san NAME): "
        "needed when --broker lists several hosts",
    )
    parser.add_argument("--ca-file", required=True, help="the broker's CA certificate (ca.pem)")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    parser.add_argument(
        "--client-ip",
        default="",
        help="the user's address: counts only if this caller is one of the broker's "
        "--trusted-proxy networks",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument(
        "--token", action="store_true", help="on success, print only the signed token"
    )
    parser.add_argument(
        "--change-password",
        action="store_true",
        help="change the password instead (with --password-stdin: old, then new, one a line)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code documented above."""
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except _UsageError as error:
        sys.stderr.write(f"pta-signin: {error}\n")
        return USAGE_EXIT
    except KeyboardInterrupt:
        sys.stderr.write("\npta-signin: interrupted\n")
        return INTERRUPTED_EXIT


class _UsageError(Exception):
    """Something the user gave (or did not give) prevents even trying: exit 2, one line."""


def _main(args: argparse.Namespace) -> int:
    try:
        brokers = failover.brokers(args.broker, args.server_name)
    except ValueError as error:
        raise _UsageError(_broker_problem(error)) from None
    try:
        credentials = grpc.ssl_channel_credentials(Path(args.ca_file).read_bytes())
    except OSError as error:
        raise _UsageError(f"cannot read --ca-file {args.ca_file}: {error.strerror}") from None
    what = "Current password" if args.change_password else "Password"
    password = _secret(args, f"{what} for {args.username}: ")
    new_password = ""
    if args.change_password:
        new_password = _secret(args, "New password: ")
        if not args.password_stdin and _secret(args, "New password again: ") != new_password:
            raise _UsageError("the new passwords differ")
    with grpc.secure_channel(brokers.target, credentials, options=brokers.options()) as channel:
        stub = signin_pb2_grpc.SignInServiceStub(channel)
        try:
            response = _call(stub, args, password, new_password)
            if args.change_password and response.outcome == Outcome.MFA_REQUIRED:
                _say(args, f"MFA_REQUIRED: {response.message}")
                response = _call(stub, args, password, new_password, _code(args))
            if (
                isinstance(response, signin_pb2.SignInResponse)
                and response.outcome == Outcome.MFA_REQUIRED
            ):
                _say(args, f"MFA_REQUIRED: {response.message}")
                response = stub.CompleteMfa(
                    signin_pb2.CompleteMfaRequest(
                        challenge_id=response.mfa_challenge_id,
                        code=_code(args),
                        client_ip=args.client_ip,
                    ),
                    timeout=args.timeout,
                )
        except grpc.RpcError as error:
            return _failed(error, as_json=args.json)
        finally:
            del password, new_password
    if args.json:
        sys.stdout.write(json.dumps(as_json(response)) + "\n")
    elif args.token and isinstance(response, signin_pb2.SignInResponse) and response.token:
        sys.stdout.write(f"{response.token}\n")
    else:
        sys.stdout.write(f"{Outcome.Name(response.outcome)}: {response.message}\n")
    return OUTCOME_EXIT.get(response.outcome, OTHER_OUTCOME_EXIT)


def _broker_problem(error: ValueError) -> str:
    """What is wrong with --broker, in the flags' own words."""
    if isinstance(error, failover.ServerNameNeeded):
        return (
            "--broker lists several hosts: give --server-name, the name every broker's "
            "certificate carries (pta-broker serve --san NAME)"
        )
    return f"--broker takes host:port, or several separated by commas: {error}"


def _call(
    stub: signin_pb2_grpc.SignInServiceStub,
    args: argparse.Namespace,
    password: str,
    new_password: str,
    mfa_code: str = "",
) -> signin_pb2.SignInResponse | signin_pb2.ChangePasswordResponse:
    if args.change_password:
        response: signin_pb2.ChangePasswordResponse = stub.ChangePassword(
            signin_pb2.ChangePasswordRequest(
                username=args.username,
                old_password=password,
                new_password=new_password,
                client_ip=args.client_ip,
                mfa_code=mfa_code,
            ),
            timeout=args.timeout,
        )
        return response
    answer: signin_pb2.SignInResponse = stub.SignIn(
        signin_pb2.SignInRequest(
            username=args.username, password=password, client_ip=args.client_ip
        ),
        timeout=args.timeout,
    )
    return answer


def as_json(message: Message) -> dict[str, Any]:
    """A response as --json prints it: the contract's field names, numbers as numbers.

    protobuf's JSON mapping writes camelCase names and 64-bit integers as strings (for
    JavaScript); scripts reading pta-signin want what the contract and grpcurl's docs name.
    """
    fields = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )
    for field in message.DESCRIPTOR.fields:
        if field.cpp_type in _INT64 and isinstance(fields.get(field.name), str):
            fields[field.name] = int(fields[field.name])
    return fields


_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def _code(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().strip()
    try:
        return input("Code from your authenticator app: ").strip()
    except EOFError:
        sys.stderr.write("\n")
        raise _UsageError("no code given") from None


def _say(args: argparse.Namespace, text: str) -> None:
    """Progress for a person (standard error), silent for scripts that asked for JSON."""
    if not args.json:
        sys.stderr.write(text + "\n")


def _secret(args: argparse.Namespace, prompt: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        return getpass.getpass(prompt)
    except EOFError:  # Ctrl-D at the prompt: end its line first
        sys.stderr.write("\n")
        raise _UsageError("no password given") from None


def _failed(error: grpc.RpcError, *, as_json: bool) -> int:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    if as_json:
        sys.stdout.write(json.dumps({"status": code.name, "message": details}) + "\n")
    else:
        hint = ""
        if code == grpc.StatusCode.UNAVAILABLE and "Socket closed" in details:
            # What grpc says when the server wants a client certificate: the agent endpoint.
            hint = (
                " (is this the broker's agent endpoint? pta-signin dials its public one, "
                "the broker's --listen)"
            )
        sys.stderr.write(f"pta-signin: {code.name}: {details}{hint}\n")
    return STATUS_EXIT.get(code, OTHER_STATUS_EXIT)


if __name__ == "__main__":
    sys.exit(main())
