"""Settings from the environment (and ``.env``), checked at start-up: a bad value stops the process."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._state import STATE
from .exceptions import ConfigError
from .retries import Backoff, parse_backoff_setting
from .tracing import context_names

ENV_PREFIX = "SCALR_QUEUE_"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]+")
# A query parameter that carries a secret: ``password=``, ``ssl_password=`` ...; its value runs to the next ``&``.
_SECRET_QUERY = re.compile(r"(?i)([^=&?;]*password=)[^&]*")
_SHOWN_USER = re.compile(r"^[^/?#\s]*$")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
ENCODE_HINT = "a / ? # or @ in the user name or password must be percent-encoded (/ as %2F, ? as %3F, # as %23, @ as %40)"
SECRET_FIELDS = frozenset({"sentinel_password"})


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
    propagate: str | None = None
    """Structlog context variables (``request_id,tenant``) carried from enqueue into the worker's log lines for the job."""
    metrics_port: int | None = Field(None, ge=1, le=65535)
    """Port of a worker's Prometheus endpoint (``/metrics``); unset: no endpoint."""
    dashboard_password: SecretStr | None = None
    """Basic-auth password of ``scalr-queue dashboard``; required to serve it on a non-loopback address."""
    sentinels: str | None = None
    """Redis Sentinel addresses, ``host:port,host:port``; when set, they name the primary and REDIS_URL's host is unused."""
    sentinel_master: str = "mymaster"
    """Name of the primary the sentinels monitor (``sentinel monitor <name> ...``)."""
    sentinel_password: SecretStr | None = None
    """Password of the sentinels themselves (their ``requirepass``), if they have one."""
    wait_replicas: int = Field(0, ge=0, le=16)
    """Replicas that must acknowledge each enqueue (Redis ``WAIT``); 0 returns once the primary has the job."""
    wait_timeout: float = Field(1, gt=0)
    """Seconds an enqueue waits for ``SCALR_QUEUE_WAIT_REPLICAS`` replicas before it raises NotReplicatedError."""

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
        # An @ outside the authority: a password with an unencoded / ? or # cut the URL short, and the rest of
        # the password would be read as a host, a path or options.
        hint = f" ({ENCODE_HINT})" if "@" in value and "@" not in parts.netloc else ""
        if parts.scheme not in REDIS_URL_SCHEMES:
            raise ValueError("it must start with redis://, rediss:// or unix://")
        if "@" in parts.query + parts.fragment + ("" if parts.scheme == "unix" else parts.path):
            raise ValueError(f"it has an @ after the host: {ENCODE_HINT}")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// URL needs the socket path, e.g. unix:///run/redis.sock")
            _check_query(parts.query)
            return value
        if not parts.hostname:
            raise ValueError(f"it has no host, e.g. redis://localhost:6379/0{hint}")
        try:
            parts.port  # noqa: B018 - reading the port validates it
        except ValueError:
            raise ValueError(f"its port is not a number between 0 and 65535{hint}") from None
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise ValueError(f"the path must be a database number, e.g. redis://localhost:6379/0{hint}")
        _check_query(parts.query)
        return value

    @field_validator("sentinels")
    @classmethod
    def _check_sentinels(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_sentinels(value)
            return value
        return None

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.sentinels and urlsplit(self.redis_url).scheme == "unix":
            raise ValueError(
                "REDIS_URL must be redis:// or rediss:// with SCALR_QUEUE_SENTINELS (its user, password, "
                "database and TLS options are used for the primary the sentinels name)"
            )
        if self.wait_replicas and self.wait_timeout >= self.redis_timeout:
            raise ValueError(
                f"SCALR_QUEUE_WAIT_TIMEOUT ({self.wait_timeout:g} s) must be below SCALR_QUEUE_REDIS_TIMEOUT "
                f"({self.redis_timeout:g} s), which bounds the whole enqueue"
            )
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as ``(host, port)`` pairs; empty without Sentinel."""
        return parse_sentinels(self.sentinels) if self.sentinels else []

    @field_validator("propagate")
    @classmethod
    def _check_propagate(cls, value: str | None) -> str | None:
        return ",".join(context_names(value)) or None

    @property
    def propagate_names(self) -> tuple[str, ...]:
        """``SCALR_QUEUE_PROPAGATE`` as names (checked when the settings were read)."""
        return context_names(self.propagate)

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


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (``[::1]:26379`` for IPv6) as pairs; a bad entry is a ValueError naming it."""
    found = []
    for entry in (e.strip() for e in value.split(",")):
        host, colon, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not entry or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not host:port; write e.g. sentinel-1:26379,sentinel-2:26379")
        found.append((host, int(port)))
    return found


def _check_query(query: str) -> None:
    """The query options redis-py reads as booleans must be booleans: ``ssl_check_hostname=false``."""
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name == "ssl_check_hostname" and values[-1].lower() not in _BOOLS:
            raise ValueError(f"ssl_check_hostname must be true or false, not {values[-1]!r}")
        if name == "ssl_cert_reqs" and values[-1] not in {"none", "optional", "required"}:
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {values[-1]!r}")


def query_value(url: str, name: str) -> str | None:
    """A query option of a Redis URL (``?ssl_cert_reqs=none``), None when absent."""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get(name)
    return values[-1] if values else None


def query_flag(url: str, name: str) -> bool | None:
    """A boolean query option of a Redis URL (``?ssl_check_hostname=false``), None when absent."""
    value = query_value(url, name)
    return None if value is None else _BOOLS.get(value.lower())


def env_var(field: str) -> str:
    """The environment variable that sets a field."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read and check the settings; a bad value becomes a ConfigError that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None


def _problem(error: Any) -> str:
    """One validation error as ``VARIABLE='value' is not valid: why``, with no secret in it."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule across settings: its message names the variables
        return message
    field = str(error["loc"][0])
    variable = field if field.isupper() else env_var(field) if field in Settings.model_fields else field
    value = error.get("input")
    if field in SECRET_FIELDS:
        value = "***"
    elif variable == "REDIS_URL" and isinstance(value, str):
        value = redact_url(value)
    return f"{variable}={value!r} is not valid: {message}"


def get_settings() -> Settings:
    """The process-wide settings, read once; ``reset_settings()`` makes the next call read them again."""
    if STATE.settings is None:
        STATE.settings = load_settings()
    settings: Settings = STATE.settings
    return settings


def reset_settings() -> None:
    STATE.settings = None


def redact_url(url: str) -> str:
    """The URL with every password replaced by ``***``: the only form of a Redis URL that may be printed.

    Written not to trust the URL's shape, since a password with an unencoded ``/``, ``#`` or ``@`` breaks it:
    the user information runs to the last ``@``; a lone component there (``redis://s3cret@host``, which
    redis-py sends as a user name with an empty password) is hidden whole; so is any ``password=`` value in
    the query. Only a user name made of plain characters stays readable.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # no recognisable scheme: treat the whole text as the part after it
        scheme, rest = "", url
    userinfo, at, host_part = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***" if colon and _SHOWN_USER.match(user) else "***"
        rest = f"{shown}@{host_part}"
    return scheme + sep + _SECRET_QUERY.sub(r"\1***", rest)
