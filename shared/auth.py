"""Users, roles and credentials.

Users live in one JSON file (``PARTSFLOW_USERS_FILE``) that every service reads,
reloaded when it changes, so ``partsflow users add`` takes effect without a
restart. API tokens are random and stored only as SHA-256 digests (a token has
enough entropy that a slow hash adds nothing); passwords for the login form are
stored with werkzeug's salted scrypt hash. A user's ``sessions_from`` (set by a new
password, or by ``partsflow users sign-out``) ends every page session begun before it,
in every service at once, with nothing written by the services themselves.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("admin", "logistics", "engineer", "service", "viewer")

READ = "read"
MANAGE_STOCK = "manage_stock"
RESERVE = "reserve"
MANAGE_SHIPMENTS = "manage_shipments"
RECORD_EVENTS = "record_events"
ACKNOWLEDGE_ALERTS = "acknowledge_alerts"

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {READ, MANAGE_STOCK, RESERVE, MANAGE_SHIPMENTS, RECORD_EVENTS, ACKNOWLEDGE_ALERTS}
    ),
    "logistics": frozenset(
        {READ, MANAGE_STOCK, RESERVE, MANAGE_SHIPMENTS, RECORD_EVENTS, ACKNOWLEDGE_ALERTS}
    ),
    "engineer": frozenset({READ, ACKNOWLEDGE_ALERTS}),
    "service": frozenset({READ, RESERVE, RECORD_EVENTS}),
    "viewer": frozenset({READ}),
}

TOKEN_PREFIX = "pf_"
MIN_PASSWORD_LENGTH = 8


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: str
    # Page sessions begun before this moment (seconds since the epoch) are over.
    sessions_from: float = field(default=0.0, compare=False)

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


class UserExists(UserError):
    """Adding a user never changes the role of one that exists: the new role would
    reach every token the user already holds."""

    def __init__(self, user: User) -> None:
        super().__init__(
            f"user {user.name} already exists, with role {user.role}; its role is not "
            "changed here, nothing changed"
        )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._users: dict[str, dict] = {}
        self._by_token: dict[str, str] = {}

    # -- reading ------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime and self._mtime is not None:
            return
        with self._lock:
            users = self._read_file()
            self._users = users
            self._by_token = {
                digest: name for name, user in users.items() for digest in user.get("tokens", [])
            }
            self._mtime = mtime

    def _read_file(self) -> dict[str, dict]:
        try:
            content = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return {}
        return dict(content.get("users", {}))

    def by_token(self, token: str) -> User | None:
        self._load()
        name = self._by_token.get(token_digest(token))
        if name is None:
            return None
        return User(name=name, role=self._users[name]["role"])

    def by_password(self, name: str, password: str) -> User | None:
        self._load()
        user = self._users.get(name)
        if not user or not user.get("password_hash"):
            # Same work either way, so timing does not tell which names exist.
            check_password_hash(_dummy_hash(), password)
            return None
        if not check_password_hash(user["password_hash"], password):
            return None
        return User(name=name, role=user["role"])

    def get(self, name: str) -> User | None:
        self._load()
        user = self._users.get(name)
        if not user:
            return None
        return User(name=name, role=user["role"], sessions_from=user.get("sessions_from", 0.0))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._users)

    # -- writing ------------------------------------------------------------------------
    def add(self, name: str, role: str, password: str | None = None) -> str:
        """Create a user, or give one that exists with this role another token (and
        the password, if given); return the new API token, shown only this once.
        Raises :class:`UserExists` if the name is taken with another role."""
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UserError("a user name takes letters, digits, '-', '_' and '.'")
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def add_to(users: dict[str, dict]) -> None:
            user = users.get(name, {"role": role, "tokens": []})
            if user["role"] != role:
                raise UserExists(User(name=name, role=user["role"]))
            user["tokens"] = [*user.get("tokens", []), token_digest(token)]
            if password is not None:
                user["password_hash"] = generate_password_hash(password)
                # A new password ends the sessions the old one opened.
                user["sessions_from"] = time.time()
            users[name] = user

        self._update(add_to)
        return token

    def end_sessions(self, name: str) -> None:
        """Sign a user out of every browser, in every service; tokens stay valid."""

        def end(users: dict[str, dict]) -> None:
            self._named(users, name)["sessions_from"] = time.time()

        self._update(end)

    def remove(self, name: str) -> None:
        """Remove a user: its tokens, password and sessions end at once."""

        def drop(users: dict[str, dict]) -> None:
            self._named(users, name)
            del users[name]

        self._update(drop)

    @staticmethod
    def _named(users: dict[str, dict], name: str) -> dict:
        if name not in users:
            raise UserError(f"no user {name}")
        return users[name]

    def _update(self, change: Callable[[dict[str, dict]], object]) -> None:
        """Apply ``change`` to the users as the file holds them now, under a lock that
        ``partsflow users`` commands run at once take in turn, and write them back
        whole (a reader sees the old file or the new one, never half of one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(self.path.suffix + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self._read_file()
            change(users)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"users": users}, handle, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        self._mtime = None


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(8))
