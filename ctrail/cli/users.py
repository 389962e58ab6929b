"""`ctrail users add|list|remove|set-role|token`: the web console's local accounts.

Passwords are read from the terminal (asked twice) or, with --password-stdin, from the first
line of standard input; they are stored as argon2id hashes (ctrail.console.auth). An API token
is printed once and stored as a digest: it cannot be shown again.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from ctrail.audit.trail import record
from ctrail.cli.common import add_common, print_docs, settings_of
from ctrail.console.users import ConsoleDb, Role, User
from ctrail.errors import UsageError

ROLES = [role.value for role in Role]
COLUMNS = (("name", "name"), ("role", "role"), ("namespaces", "namespaces"),
           ("clusters", "clusters"))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("users", help="web console users, roles, scopes and API tokens")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer")
    _scope_flags(add)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    listing = actions.add_parser("list", help="list users with role and scope")
    remove = actions.add_parser("remove", help="remove a user, their tokens and sessions")
    remove.add_argument("name")
    set_role = actions.add_parser("set-role", help="change a user's role (and scope, if given)")
    set_role.add_argument("name")
    set_role.add_argument("role", choices=ROLES)
    _scope_flags(set_role)
    set_role.add_argument("--unscoped", action="store_true",
                          help="remove the user's namespace and cluster limits")
    token = actions.add_parser("token", help="create an API token for scripts (printed once)")
    token.add_argument("name")
    token.add_argument("--label", default="", help="what the token is for")
    for sub in (add, listing, remove, set_role, token):
        add_common(sub)
        sub.set_defaults(run=run)


def _scope_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="limit the user to this namespace (repeat for more)")
    parser.add_argument("--cluster", action="append", default=[], metavar="NAME",
                        help="limit the user to this cluster (repeat for more)")


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    db = ConsoleDb(settings.data_dir)
    try:
        if args.action == "list":
            print_docs((u.public() for u in db.users()), args.format, "users", COLUMNS)
            return 0
        detail = _change(db, args)
    finally:
        db.close()
    record(settings, "console-users", {"change": args.action, "console_user": args.name,
                                       **detail})
    return 0


def _change(db: ConsoleDb, args: argparse.Namespace) -> dict[str, object]:
    if args.action == "add":
        user = User(args.name, Role(args.role), tuple(args.namespace), tuple(args.cluster))
        db.add_user(user, _password_hash(args.password_stdin))
        print(f"Added {user.name} ({user.role.value}).", file=sys.stderr)
        return user.public()
    if args.action == "remove":
        db.remove_user(args.name)
        print(f"Removed {args.name}.", file=sys.stderr)
        return {}
    if args.action == "set-role":
        old = db.user(args.name)
        if old is None:
            raise UsageError(f"no user {args.name!r}")
        keep = not (args.namespace or args.cluster or args.unscoped)
        user = User(args.name, Role(args.role),
                    old.namespaces if keep else tuple(args.namespace),
                    old.clusters if keep else tuple(args.cluster))
        db.update_user(user)
        print(f"{user.name} is now {user.role.value}; their sessions were ended.",
              file=sys.stderr)
        return user.public()
    from ctrail.console.auth import new_token  # starlette and argon2: only when used

    token = new_token()
    db.add_token(args.name, token, args.label)
    print(token)
    return {"label": args.label}


def _password_hash(from_stdin: bool) -> str:
    from ctrail.console.auth import MIN_PASSWORD_CHARS, hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ")
    try:
        return hash_password(password)
    except ValueError:
        raise UsageError(f"a password needs at least {MIN_PASSWORD_CHARS} characters") from None
