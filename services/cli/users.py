"""``relance user``: the workspace's users, their roles per tenant and their personal API tokens.

``user add`` creates a user with a password typed twice at a prompt, or read from standard input with
``--password-stdin`` (12 characters at least), or with ``--no-password`` for a user who signs in with OIDC only;
``passwd`` sets a new password; ``disable`` stops a user at once (its sessions and tokens are revoked) and ``enable``
lets it back; ``grant`` / ``revoke`` change a role in a tenant; ``list`` shows who holds what; ``token add`` prints a
new personal API token once (only its SHA-256 is kept). Exit status: 0 done, 1 refused (the message says why), 78
configuration (e.g. a database without the latest schema).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING

from services.cli.options import Commands, json_default, runs
from services.workspace.roles import ROLES
from shared.config import Settings

if TYPE_CHECKING:
    from services.workspace.users import UserStore

REFUSED = 1


def add_user(commands: Commands) -> None:
    user = commands.add_parser("user", help="the workspace's users, their roles per tenant and API tokens")
    user_commands = user.add_subparsers(title="user commands", metavar="ACTION")

    add = user_commands.add_parser(
        "add",
        help="add a user (password asked twice, or --password-stdin; none: OIDC sign-in only)",
        description="Add a user of the workspace. Roles: " + ", ".join(ROLES) + ".",
    )
    add.add_argument("login", metavar="LOGIN", help="the sign-in name, e.g. the user's e-mail address")
    add.add_argument("--name", required=True, help="the name shown in the workspace and on recorded actions")
    add.add_argument("--tenant", action="append", default=[], help="a tenant to give --role in (repeatable)")
    add.add_argument("--role", action="append", default=[], choices=ROLES, help="the role in the --tenant before")
    _password_options(add)
    add.add_argument(
        "--no-password", action="store_true", help="no password: the user signs in with OIDC single sign-on only"
    )
    runs(add, user_add, database_url=True)

    passwd = user_commands.add_parser("passwd", help="set a user's password (asked twice, or --password-stdin)")
    passwd.add_argument("login", metavar="LOGIN")
    _password_options(passwd)
    runs(passwd, user_passwd, database_url=True)

    disable = user_commands.add_parser(
        "disable", help="stop a user signing in; its sessions and API tokens are revoked at once"
    )
    disable.add_argument("login", metavar="LOGIN")
    runs(disable, user_disable, database_url=True)

    enable = user_commands.add_parser("enable", help="let a disabled user sign in again (its old sessions stay ended)")
    enable.add_argument("login", metavar="LOGIN")
    runs(enable, user_enable, database_url=True)

    listing = user_commands.add_parser("list", help="every user, enabled or not, with its roles per tenant")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    runs(listing, user_list, database_url=True)

    for name, verb in (("grant", "give"), ("revoke", "take away")):
        change = user_commands.add_parser(name, help=f"{verb} a user's role in a tenant")
        change.add_argument("login", metavar="LOGIN")
        change.add_argument("--tenant", required=True)
        change.add_argument("--role", required=True, choices=ROLES)
        runs(change, user_grant if name == "grant" else user_revoke, database_url=True)

    token = user_commands.add_parser("token", help="personal API tokens (Authorization: Bearer …)")
    token_commands = token.add_subparsers(title="token commands", metavar="ACTION")
    token_add = token_commands.add_parser("add", help="make a token for a user and print it, once")
    token_add.add_argument("login", metavar="LOGIN")
    token_add.add_argument("--label", required=True, help="what the token is for, e.g. 'erp-sync' (unique per user)")
    runs(token_add, token_add_command, database_url=True)
    token_revoke = token_commands.add_parser("revoke", help="revoke a user's token by its label")
    token_revoke.add_argument("login", metavar="LOGIN")
    token_revoke.add_argument("--label", required=True)
    runs(token_revoke, token_revoke_command, database_url=True)


def _password_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def _store(settings: Settings) -> UserStore:
    from services.workspace.users import UserStore
    from shared.runtime import migrated_engine

    return UserStore(migrated_engine(settings))


def _refused(message: str) -> int:
    print(f"relance: {message}", file=sys.stderr)
    return REFUSED


def _password(args: argparse.Namespace) -> str:
    """The password from standard input or typed twice (refused if the two differ or it is weak)."""
    from services.workspace.users import check_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise _Refusal("no terminal to ask the password at: pipe it with --password-stdin")
        password = getpass.getpass("Password: ")
        check_password(password)
        if getpass.getpass("Password again: ") != password:
            raise _Refusal("the two passwords differ; nothing changed")
    return check_password(password)


class _Refusal(Exception):
    pass


def _run(action: object) -> int:
    from services.workspace.users import UserError

    assert callable(action)
    try:
        result = action()
    except (UserError, _Refusal) as exc:
        return _refused(str(exc))
    return int(result or 0)


def user_add(args: argparse.Namespace, settings: Settings) -> int:
    from services.workspace.users import normal_login, role_pairs

    def act() -> int:
        normal_login(args.login)
        pairs = role_pairs(args.tenant, args.role)
        password = None if args.no_password else _password(args)
        store = _store(settings)
        user = store.add(args.login, args.name, password=password)
        for tenant, role in pairs:
            store.grant(user.login, tenant, role)
        held = ", ".join(f"{role} in {tenant}" for tenant, role in pairs) or "no role yet (relance user grant)"
        how = "with a password" if password else "for OIDC sign-in only"
        print(f"added {user.login} ({user.display_name}) {how}: {held}")
        return 0

    return _run(act)


def user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        store = _store(settings)
        if store.get(args.login) is None:
            return _refused(f"no user {args.login.strip().lower()[:254]!r}")
        store.set_password(args.login, _password(args))
        print(f"password of {args.login.strip().lower()} changed")
        return 0

    return _run(act)


def user_disable(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        user = _store(settings).disable(args.login)
        print(f"{user.login} disabled; its sessions and API tokens are revoked")
        return 0

    return _run(act)


def user_enable(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        _store(settings).enable(args.login)
        print(f"{args.login.strip().lower()} may sign in again")
        return 0

    return _run(act)


def user_list(args: argparse.Namespace, settings: Settings) -> int:
    users = _store(settings).all()
    if args.json:
        rows = [
            {
                "login": u.login,
                "name": u.display_name,
                "password": u.has_password,
                "oidc": u.oidc_subject is not None,
                "disabled_at": u.disabled_at,
                "roles": {t: sorted(r) for t, r in u.roles.items()},
            }
            for u in users
        ]
        print(json.dumps(rows, default=json_default, indent=2, ensure_ascii=False))
        return 0
    if not users:
        print("no users yet: relance user add LOGIN --name NAME --tenant TENANT --role ROLE")
    for u in users:
        roles = "; ".join(f"{t}: {', '.join(sorted(r))}" for t, r in u.roles.items()) or "no role"
        state = f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "enabled"
        sign_in = "+".join(x for x, on in (("password", u.has_password), ("oidc", u.oidc_subject)) if on) or "none"
        print(f"{u.login}\t{u.display_name!r}\t{state}\tsign-in: {sign_in}\t{roles}")
    return 0


def user_grant(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        changed = _store(settings).grant(args.login, args.tenant, args.role)
        login = args.login.strip().lower()
        print(f"{login} is {args.role} in {args.tenant}" + ("" if changed else " (already)"))
        return 0

    return _run(act)


def user_revoke(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        changed = _store(settings).revoke(args.login, args.tenant, args.role)
        login = args.login.strip().lower()
        if not changed:
            return _refused(f"{login} is not {args.role} in {args.tenant}: nothing to revoke")
        print(f"{login} is no longer {args.role} in {args.tenant}")
        return 0

    return _run(act)


def token_add_command(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        token = _store(settings).add_token(args.login, args.label)
        print(token)
        print(
            f"the token {args.label!r} of {args.login.strip().lower()}: shown this once, keep it secret; send it as "
            "Authorization: Bearer <token>",
            file=sys.stderr,
        )
        return 0

    return _run(act)


def token_revoke_command(args: argparse.Namespace, settings: Settings) -> int:
    def act() -> int:
        if not _store(settings).revoke_token(args.login, args.label):
            return _refused(f"{args.login.strip().lower()} has no live token labelled {args.label!r}")
        print(f"token {args.label!r} of {args.login.strip().lower()} revoked")
        return 0

    return _run(act)
