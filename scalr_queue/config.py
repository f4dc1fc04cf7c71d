"""Settings from the environment (and ``.env``), checked at start-up: a bad value stops the process."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._state import STATE
from .exceptions import ConfigError
from .retries import Backoff, parse_backoff_setting

ENV_PREFIX = "SCALR_QUEUE_"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]+")


class Settings(BaseSettings):
    """scalr_queue's configuration; each field is read from ``SCALR_QUEUE_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True, validate_default=True
    )

    redis_url: str = Field("redis://localhost:6379/0", validation_alias="REDIS_URL")
    """Where Redis is (``REDIS_URL``): redis://, rediss:// (TLS) or unix://, user and password in the URL."""
    name: str = "default"
    """Logical queue for enqueue and the worker; its Redis key is ``arq:queue:<name>``."""
    concurrency: int = Field(10, ge=1, le=10_000)
    """Jobs one worker process runs at once."""
    job_timeout: float = Field(300, gt=0)
    """Seconds one try of a job may run."""
    max_tries: int = Field(5, ge=1)
    """Tries before a job is failed."""
    mode: Literal["redis", "sync"] = "redis"
    """``sync`` runs each job inline at enqueue, for tests and scripts."""
    tasks: str | None = None
    """Module exporting ``tasks = [...]``; when set, enqueue checks task names and arguments."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """``json`` for containers, ``console`` for a terminal, ``auto`` picks by whether stdout is a TTY."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level that is logged."""
    keep_result: float = Field(3600, ge=0)
    """Seconds a finished job's result stays readable."""
    redis_timeout: float = Field(5, gt=0)
    """Seconds an enqueue, a check or a connection attempt may wait for Redis before it fails."""
    health_interval: float = Field(5, gt=0, le=60)
    """Seconds between a worker's heartbeats; a worker counts as dead after three missed beats."""
    backoff: str = "exponential"
    """Default wait between tries: ``exponential`` (2, 4, 8 s ... with jitter), seconds (``5``) or a list (``1,5,30``)."""
    backoff_max: float = Field(300, gt=0)
    """Cap, in seconds, on one exponential backoff delay."""
    shutdown_grace: float = Field(25, ge=0)
    """Seconds running jobs get to finish after SIGTERM before they are cancelled and queued again."""
    lease: float = Field(10, ge=1, le=300)
    """Seconds a worker's claim on a running job lasts unless renewed; a dead worker's jobs run again after it."""
    rollout_window: float = Field(600, ge=0)
    """Seconds a job for a task this worker does not know is put back for a newer worker before it fails."""
    failed_max_age: float = Field(7 * 86_400, gt=0)
    """Seconds a failure record is kept."""
    failed_max_count: int = Field(10_000, ge=1)
    """Most failure records kept; the oldest go first."""
    max_payload: int = Field(512 * 1024, ge=1024)
    """Largest job payload in bytes; bigger ones fail at enqueue (pass ids, not data)."""
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The worker's event loop: ``auto`` takes uvloop when it is installed, else asyncio's own."""
    arq_job_lines: bool = False
    """Also log arq's own per-job lines (``→ job started``, ``← job succeeded`` ...) beside the job_* events."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Port of a worker's Prometheus endpoint (``/metrics``); unset: no endpoint."""
    dashboard_password: SecretStr | None = None
    """Basic-auth password of ``scalr-queue dashboard``; required to serve it on a non-loopback address."""

    @field_validator("log_format", "log_level", "mode", "event_loop", mode="before")
    @classmethod
    def _fold_case(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in {"debug", "info", "warning", "error"} else value.lower()

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in REDIS_URL_SCHEMES:
            raise ValueError("it must start with redis://, rediss:// or unix://")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs the socket path, e.g. unix:///run/redis.sock")
            return value
        if not parts.hostname:
            raise ValueError("it has no host, e.g. redis://localhost:6379/0")
        try:
            parts.port  # noqa: B018 - reading the port validates it
        except ValueError:
            raise ValueError("its port is not a number between 0 and 65535") from None
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise ValueError("the path must be a database number, e.g. redis://localhost:6379/0")
        return value

    @field_validator("backoff")
    @classmethod
    def _check_backoff(cls, value: str) -> str:
        parse_backoff_setting(value)
        return value

    @property
    def default_backoff(self) -> Backoff:
        return dataclasses.replace(parse_backoff_setting(self.backoff), cap_s=self.backoff_max)

    @field_validator("name")
    @classmethod
    def _check_queue_name(cls, value: str) -> str:
        if not QUEUE_NAME_PATTERN.fullmatch(value):
            raise ValueError("use letters, digits and _ . : - only")
        return value


def env_var(field: str) -> str:
    """The environment variable that sets a field."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read and check the settings; a bad value becomes a ConfigError that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            variable = (
                field if field.isupper() else env_var(field) if field in Settings.model_fields else field
            )
            value = error.get("input")
            shown = redact_url(value) if variable == "REDIS_URL" and isinstance(value, str) else value
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{variable}={shown!r} is not valid: {message}")
        raise ConfigError("; ".join(problems)) from None


def get_settings() -> Settings:
    """The process-wide settings, read once; ``reset_settings()`` makes the next call read them again."""
    if STATE.settings is None:
        STATE.settings = load_settings()
    settings: Settings = STATE.settings
    return settings


def reset_settings() -> None:
    STATE.settings = None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``: the only form of a Redis URL that may be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return SplitResult(parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment).geturl()
