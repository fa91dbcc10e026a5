"""Settings, read once from ``PARTSFLOW_*`` environment variables.

Defaults in code, then the environment, then a mapping a test or the command line
passes in. Only the factories call :func:`load_settings`; nothing reads the
environment at import time.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SERVICES = ("inventory", "shipments", "tracking")
BROKER_SCHEMES = ("memory", "amqp", "amqps", "pyamqp")
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel")
MIN_SECRET_KEY_LENGTH = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")


class ConfigError(ValueError):
    """A setting is missing or malformed, or names what cannot be used (a data dir
    that cannot be made, a database out of reach); the message is one line for the
    operator, naming the setting."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    broker_url: str = "memory://"
    db_urls: Mapping[str, str] = field(default_factory=dict)
    bus_prefix: str = "partsflow"
    secret_key: str = ""
    users_file: Path | None = None
    embedded: bool = False
    tracking_scan_seconds: float = 30.0
    queue_type: str = "quorum"
    delivery_limit: int = 5
    confirm_timeout: float = 5.0
    consumer_prefetch: int = 64
    # Handler threads per consumer. One keeps each queue's order; more let database
    # round trips of several messages overlap (handlers refuse stale versions either way).
    consumer_threads: int = 1
    relay_batch_size: int = 500
    relay_idle_seconds: float = 0.5
    retry_backoff_seconds: float = 0.2
    max_retry_backoff_seconds: float = 30.0
    max_body_bytes: int = 1024 * 1024
    eta_step_minutes: float = 15.0
    secure_cookies: bool = False
    # Writes to the JSON API per user and service, in the ``limits`` notation
    # ("120/minute", "10/second; 600/hour"); empty: no limit.
    write_rate_limit: str = ""
    # Where the counts live: one process (``memory://``), or Redis, shared by every
    # gunicorn worker and web process (``redis://host:6379/0``).
    rate_limit_storage_url: str = "memory://"
    # A worker serves /healthz, /readyz and /metrics on this port (0: none).
    worker_port: int = 0
    log_level: str = "INFO"
    log_format: str = "json"

    def db_url(self, service: str) -> str:
        return self.db_urls[service]

    @property
    def users_path(self) -> Path:
        return self.users_file or self.data_dir / "users.json"

    @property
    def is_memory_bus(self) -> bool:
        return self.broker_url.startswith("memory://")

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_ENV_NAMES = {
    "PARTSFLOW_DATA_DIR": "data_dir",
    "PARTSFLOW_BROKER_URL": "broker_url",
    "PARTSFLOW_BUS_PREFIX": "bus_prefix",
    "PARTSFLOW_SECRET_KEY": "secret_key",
    "PARTSFLOW_USERS_FILE": "users_file",
    "PARTSFLOW_TRACKING_SCAN_SECONDS": "tracking_scan_seconds",
    "PARTSFLOW_QUEUE_TYPE": "queue_type",
    "PARTSFLOW_DELIVERY_LIMIT": "delivery_limit",
    "PARTSFLOW_CONFIRM_TIMEOUT": "confirm_timeout",
    "PARTSFLOW_CONSUMER_PREFETCH": "consumer_prefetch",
    "PARTSFLOW_CONSUMER_THREADS": "consumer_threads",
    "PARTSFLOW_RELAY_BATCH_SIZE": "relay_batch_size",
    "PARTSFLOW_RELAY_IDLE_SECONDS": "relay_idle_seconds",
    "PARTSFLOW_RETRY_BACKOFF_SECONDS": "retry_backoff_seconds",
    "PARTSFLOW_MAX_RETRY_BACKOFF_SECONDS": "max_retry_backoff_seconds",
    "PARTSFLOW_MAX_BODY_BYTES": "max_body_bytes",
    "PARTSFLOW_ETA_STEP_MINUTES": "eta_step_minutes",
    "PARTSFLOW_SECURE_COOKIES": "secure_cookies",
    "PARTSFLOW_WRITE_RATE_LIMIT": "write_rate_limit",
    "PARTSFLOW_RATE_LIMIT_STORAGE_URL": "rate_limit_storage_url",
    "PARTSFLOW_WORKER_PORT": "worker_port",
    "PARTSFLOW_LOG_LEVEL": "log_level",
    "PARTSFLOW_LOG_FORMAT": "log_format",
}


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    embedded: bool | None = None,
) -> Settings:
    """Build and validate the settings: code defaults < environment < ``overrides``.

    ``overrides`` uses the field names of :class:`Settings` (``broker_url``), or the
    environment names (``PARTSFLOW_BROKER_URL``), whichever the caller finds clearer.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for env_name, attr in _ENV_NAMES.items():
        if environ.get(env_name):
            raw[attr] = environ[env_name]
    db_urls: dict[str, str] = {}
    for service in SERVICES:
        value = environ.get(f"PARTSFLOW_{service.upper()}_DB_URL")
        if value:
            db_urls[service] = value
    for key, value in (overrides or {}).items():
        attr = _ENV_NAMES.get(key, key)
        service_db = _service_of_db_setting(attr)
        if service_db:
            db_urls[service_db] = value
        else:
            raw[attr] = value
    if embedded is not None:
        raw["embedded"] = embedded
    settings = _coerce(raw)
    data_dir = settings.data_dir
    for service in SERVICES:
        db_urls.setdefault(service, f"sqlite:///{(data_dir / f'{service}.db').as_posix()}")
    settings = replace(settings, db_urls=db_urls)
    _validate(settings)
    return settings


def _service_of_db_setting(attr: str) -> str | None:
    for service in SERVICES:
        if attr in (f"{service}_db_url", f"PARTSFLOW_{service.upper()}_DB_URL"):
            return service
    return None


def _coerce(raw: Mapping[str, Any]) -> Settings:
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        default = getattr(Settings(), name) if name != "db_urls" else None
        values[name] = _as_type_of(name, default, value)
    return Settings(**values)


def _as_type_of(name: str, default: Any, value: Any) -> Any:
    env_name = next((k for k, v in _ENV_NAMES.items() if v == name), name)
    try:
        if isinstance(default, bool) or name == "embedded":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if name in ("data_dir", "users_file"):
            return Path(value) if value else None
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{env_name} has an invalid value: {value!r}") from None


def _validate(settings: Settings) -> None:
    scheme = urlsplit(settings.broker_url).scheme
    if scheme not in BROKER_SCHEMES:
        raise ConfigError(
            f"PARTSFLOW_BROKER_URL must start with one of {', '.join(BROKER_SCHEMES)}: "
            f"got {settings.broker_url!r}"
        )
    for service, url in settings.db_urls.items():
        try:
            parsed = make_url(url)
            # An unknown driver ("sqlite+nosuch://") is found here, not at the first query.
            parsed.get_dialect()
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ConfigError(
                f"PARTSFLOW_{service.upper()}_DB_URL is not a database URL: {url!r}"
            ) from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"PARTSFLOW_{service.upper()}_DB_URL must be a sqlite or postgresql URL: {url!r}"
            )
    if not settings.bus_prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(
            f"PARTSFLOW_BUS_PREFIX has characters a queue name cannot take: {settings.bus_prefix!r}"
        )
    if settings.queue_type not in ("quorum", "classic"):
        raise ConfigError("PARTSFLOW_QUEUE_TYPE must be quorum or classic")
    if settings.consumer_threads < 1:
        raise ConfigError("PARTSFLOW_CONSUMER_THREADS must be at least 1")
    if settings.delivery_limit < 1:
        raise ConfigError("PARTSFLOW_DELIVERY_LIMIT must be at least 1")
    if not _positive(settings.tracking_scan_seconds):
        raise ConfigError("PARTSFLOW_TRACKING_SCAN_SECONDS must be positive")
    if not 0 <= settings.worker_port <= 65535:
        raise ConfigError("PARTSFLOW_WORKER_PORT must be a port number, 0 to 65535")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"PARTSFLOW_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"PARTSFLOW_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    for name, value in (
        ("PARTSFLOW_CONSUMER_PREFETCH", settings.consumer_prefetch),
        ("PARTSFLOW_RELAY_BATCH_SIZE", settings.relay_batch_size),
        ("PARTSFLOW_MAX_BODY_BYTES", settings.max_body_bytes),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1")
    for name, seconds in (
        ("PARTSFLOW_CONFIRM_TIMEOUT", settings.confirm_timeout),
        ("PARTSFLOW_RELAY_IDLE_SECONDS", settings.relay_idle_seconds),
        ("PARTSFLOW_RETRY_BACKOFF_SECONDS", settings.retry_backoff_seconds),
        ("PARTSFLOW_MAX_RETRY_BACKOFF_SECONDS", settings.max_retry_backoff_seconds),
        ("PARTSFLOW_ETA_STEP_MINUTES", settings.eta_step_minutes),
    ):
        if not _positive(seconds):
            raise ConfigError(f"{name} must be positive")
    _validate_rate_limit(settings)
    # The embedded mode is for trying Partsflow on one machine: it takes any key it is
    # given, and makes a long one itself when none is.
    if not settings.embedded:
        if not settings.secret_key:
            raise ConfigError("PARTSFLOW_SECRET_KEY is required outside the embedded mode")
        if len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"PARTSFLOW_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )


def _positive(number: float) -> bool:
    return math.isfinite(number) and number > 0


def _validate_rate_limit(settings: Settings) -> None:
    if settings.write_rate_limit.strip():
        try:
            parse_many(settings.write_rate_limit)
        except ValueError:
            raise ConfigError(
                "PARTSFLOW_WRITE_RATE_LIMIT must read like '120/minute' or "
                f"'10/second; 600/hour': got {settings.write_rate_limit!r}"
            ) from None
    scheme = urlsplit(settings.rate_limit_storage_url).scheme
    if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ConfigError(
            "PARTSFLOW_RATE_LIMIT_STORAGE_URL must start with one of "
            f"{', '.join(RATE_LIMIT_STORAGE_SCHEMES)}: got {settings.rate_limit_storage_url!r}"
        )


def ensure_data_dir(settings: Settings) -> None:
    """Create the data dir, or say in one line why it cannot be used."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(
            f"PARTSFLOW_DATA_DIR {str(settings.data_dir)!r} is a file, not a folder"
        ) from None
    except OSError as error:
        raise _unusable_data_dir(settings, error) from None


def ensure_embedded_secret(settings: Settings) -> Settings:
    """In the embedded mode, generate the secret key once and keep it in the data dir."""
    if settings.secret_key:
        return settings
    ensure_data_dir(settings)
    path = settings.data_dir / "secret_key"
    try:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return replace(settings, secret_key=path.read_text().strip())
    except OSError as error:
        raise _unusable_data_dir(settings, error) from None


def _unusable_data_dir(settings: Settings, error: OSError) -> ConfigError:
    return ConfigError(
        f"PARTSFLOW_DATA_DIR {str(settings.data_dir)!r} cannot be used: {error.strerror or error}"
    )
