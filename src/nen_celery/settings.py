"""One Settings object, read from the environment (prefix ``NEN_``) once per process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nen_celery.domain.hints import PARAM_RE, hint_keys
from nen_celery.errors import ConfigurationError


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Settings(BaseSettings):
    """Every knob the project has. Each documented Nen gap is a setting, not a constant."""

    model_config = SettingsConfigDict(
        env_prefix="NEN_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Nen API
    api_url: str = "https://api.getnen.ai"
    api_key: SecretStr | None = None
    signing_key: SecretStr | None = None
    webhook_url: str | None = None
    webhook_field: str = "webhook_callback"
    # query parameter carrying our run id and its token in each run's webhook URL (domain/hints.py);
    # "" turns it off
    webhook_run_param: str = "nen_run"
    retrieval_path: str = "/runs/{message_id}"

    # Webhooks in
    webhook_secret: SecretStr | None = None  # comma-separated: several accepted while rotating
    webhook_max_body: int = Field(default=1024 * 1024, gt=0)
    webhook_body_timeout: float = Field(default=6.0, gt=0, le=30)  # s for a whole body (Nen waits 5)
    receiver_metrics: bool = False  # GET /metrics on the receiver's mounts: opt-in (it shows volumes)
    # Opt-in fast paths (fastpath/), all off by default: stock Celery behaviour. Each is
    # installed only in a process that asked for it (never on import or init_celery), used only
    # with celery/kombu inside its tested range (fastpath/gate.py: TESTED) and after its start-up check;
    # otherwise it steps aside with one WARNING (logger nen_celery.fastpath.gate) naming why.
    # Receiver: push ingest_webhook messages onto a redis:// broker with one LPUSH
    # (fastpath/direct_publish.py) rather than through apply_async, once a probe message built both ways
    # matched; false (default): apply_async
    webhook_direct_publish: bool = False
    # start_run / redrive_run (outside a task, no countdown) push submit_run, and the ready-made
    # app's workers push on_complete / on_failure callbacks, the same way; false (default):
    # apply_async
    direct_publish: bool = False
    # Receiver: apply webhooks of hinted runs itself (one Lua script on the run store,
    # web/apply.py) instead of queueing ingest_webhook; a terminal one's callback it then
    # publishes (web/decide.py); false: the receiver never writes run state
    webhook_apply_processing: bool = True
    # Opt-in fast paths that change kombu/Celery behaviour in nen's worker processes only,
    # installed at a worker's start: kombu's Redis transport patches (fastpath/kombu_redis.py;
    # signatures checked first), and task events sent in 50 ms batches by the ready-made app's
    # workers (fastpath/event_batches.py; the dispatcher's hooks checked first). Default false.
    patch_kombu_redis: bool = False
    event_batches: bool = False

    # Secrets at rest: comma-separated Fernet-format keys, the first encrypts, all decrypt (store/sealer.py).
    secrets_key: SecretStr | None = None

    # Redis / Celery
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str | None = None
    result_backend: str | None = None
    key_prefix: str = "nen"
    # Start workers on a run-store Redis whose maxmemory-policy evicts keys (checks/durability.py)
    allow_eviction: bool = False
    # Wait until a write is durable before a side effect that cannot be taken back
    # (store/durable.py): aof = WAITAOF 1 0, replicas = WAIT; auto = aof when the server has it on
    durability: Literal["auto", "aof", "replicas", "off"] = "auto"
    durability_timeout: int = Field(default=2000, gt=0)  # ms: past it, the side effect waits
    durability_replicas: int = Field(default=1, ge=1)
    # start_run returns only once the run's record is durable (costs the web request a fsync)
    durable_start: bool = False
    # Run-store key layout: runs and their timers are spread over this many hash tags (Redis
    # Cluster slots). Part of the layout: keep it fixed for the life of a deployment.
    store_shards: int = Field(default=16, ge=1, le=4096)
    visibility_timeout: int = Field(default=3600, gt=0)
    restore_interval: int = Field(default=10, gt=0)  # Redis broker: sweep for abandoned messages
    # Redis broker connections per worker process (kombu's default, 10, fails the acks of a
    # -P gevent -c 100 worker: each greenlet acks on a connection of its own)
    broker_max_connections: int = Field(default=200, ge=10)
    # Redis broker: which queue a worker takes its next message from. "priority": the queues
    # nearest a run's end first (callbacks, complete, ingest, then submit), so runs in flight
    # finish before new ones start; "round_robin": kombu's default, each queue in turn.
    broker_queue_order: Literal["priority", "round_robin"] = "priority"

    # HTTP towards Nen
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    write_timeout: float = Field(default=10.0, gt=0)
    pool_timeout: float = Field(default=5.0, gt=0)
    # connections per worker process (all kept alive): set it to at least the pool's -c so
    # no task waits for a connection (NEN_POOL_TIMEOUT)
    http_max_connections: int = Field(default=100, ge=1, le=10_000)
    # an idle connection is not reused after this long: keep it below Nen's own idle timeout, or
    # a POST sent as the server closes the connection is lost after sending (parked unknown)
    http_keepalive_expiry: float = Field(default=4.0, gt=0, le=300)
    # Opt-in, only for a Nen that deduplicates by Idempotency-Key: resend a POST whose outcome is
    # unknown (read timeout, cut connection, 5xx/408 or a gateway's 429/503 without Nen's error
    # body) with the same key. Off: such a run is `unknown` until Nen's own word (its webhooks).
    retry_ambiguous: bool = False
    retry_read_timeout: bool = False  # the older name of retry_ambiguous (either turns it on)
    # statuses retried when they carry Nen's own error body ({"error", "message"}): proof that
    # Nen did not create the run
    retry_statuses: str = "429,503"
    submit_deadline: float = Field(default=30.0, gt=0)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=10.0, gt=0)
    submit_reschedules: int = Field(default=5, ge=0)
    reschedule_delay: float = Field(default=30.0, gt=0, le=60)

    # Lifecycle
    retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    completion_lease: float = Field(default=60.0, gt=0, le=60)
    # how long one execution of a callback holds its (run, attempt) in CallbackTask before a
    # copy of its message may run it; renewed every third of it while the callback runs. A copy
    # waiting on it comes back in half of it: at most 120, so no countdown exceeds 60 s
    callback_lease: float = Field(default=30.0, gt=0, le=120)
    publish_timeout: float = Field(default=2.0, gt=0)
    poll_interval: float = Field(default=5.0, gt=0, le=60)
    # start_run refuses params (and, counted on their own, secure params) larger than this as
    # compact UTF-8 JSON: they are copied into every read of the run and every callback message
    max_params_bytes: int = Field(default=64 * 1024, gt=0)

    # Reconciliation (celery beat runs reconcile_runs every reconcile_interval seconds)
    reconcile_interval: float = Field(default=10.0, gt=0, le=60)
    reconcile_batch: int = Field(default=500, gt=0)
    queued_grace: float = Field(default=120.0, gt=0)  # queued this long with no submit holder: resubmit
    webhook_deadline: float = Field(default=600.0, gt=0)  # no status change this long: poll Nen
    repoll_interval: float = Field(default=60.0, gt=0)  # then poll this often until terminal
    run_timeout: float = Field(default=24 * 3600.0, gt=0)  # not terminal after this: end failed
    unknown_timeout: float = Field(default=3600.0, gt=0)  # unresolved `unknown` after this: submit_failed
    lookup_path: str | None = None  # optional: find a run by Idempotency-Key (not documented by Nen)
    parked_grace: float = Field(default=30.0, gt=0)  # re-check parked webhooks after this

    # Testing only: comma-separated failpoint names (see runtime/faults.py). Never set in production.
    failpoints: str = ""

    # --- security settings ---
    # Webhook signature scheme: "nen" (X-Hmac-Signature over the body, no timestamp) or
    # "standard" (Standard Webhooks: webhook-id/-timestamp/-signature, NEN_WEBHOOK_SECRET entries
    # are "whsec_<base64>"). Opt-in; Nen documents only "nen".
    webhook_scheme: Literal["nen", "standard"] = "nen"
    webhook_tolerance: float = Field(default=300.0, gt=0)  # standard scheme: max |now - timestamp| (s)
    clock_skew_max: float = Field(default=60.0, gt=0)  # warn when the clock is off Nen's by more (s)
    # answer to a verified webhook whose message_id is not bound yet (queued and parked)
    webhook_parked_status: int = Field(default=202, ge=200, le=299)

    # --- scaling settings ---
    # RabbitMQ broker only: queue type of the project's queues ("quorum": replicated, needs
    # RabbitMQ >= 3.10; "classic" for older or single-node brokers).
    broker_queue_type: Literal["quorum", "classic"] = "quorum"
    # Requests per second towards Nen shared by every worker (token bucket in Redis); 0 = off.
    rate_limit: float = Field(default=0.0, ge=0)
    # Requests allowed at once after an idle spell; unset = max(1, NEN_RATE_LIMIT).
    rate_limit_burst: float | None = Field(default=None, ge=1)
    # Longest a task blocks for a token; a longer wait re-queues the task with a countdown instead.
    rate_limit_max_wait: float = Field(default=2.0, ge=0, le=10)
    # How long every worker holds off after a 429 that carries no Retry-After (s).
    rate_limit_pause: float = Field(default=5.0, gt=0, le=60)

    @property
    def rate_burst(self) -> float:
        """The bucket's capacity: NEN_RATE_LIMIT_BURST, or one second's worth (at least 1)."""
        return self.rate_limit_burst if self.rate_limit_burst is not None else max(1.0, self.rate_limit)

    # Logs: "json" = one JSON object per line with run_id/message_id/workflow_id (see logs/runlog.py).
    log_format: Literal["text", "json"] = "text"

    @field_validator("webhook_scheme", mode="before")
    @classmethod
    def _webhook_scheme(cls, value: object, info: ValidationInfo) -> object:
        scheme = value.strip().lower() if isinstance(value, str) else value
        if scheme not in ("nen", "standard"):
            raise ValueError(f"NEN_WEBHOOK_SCHEME must be 'nen' or 'standard', got {value!r}")
        if scheme == "standard":
            from nen_celery.domain.signing import standard_secret_key

            secret = info.data.get("webhook_secret")
            entries = _split(secret.get_secret_value() if isinstance(secret, SecretStr) else None)
            for number, entry in enumerate(entries, 1):
                try:
                    standard_secret_key(entry)
                except ValueError as exc:  # the message never carries the secret
                    raise ValueError(f"NEN_WEBHOOK_SECRET entry {number}: {exc}") from None
        return scheme

    @field_validator("api_key", "signing_key", "webhook_secret", "secrets_key", mode="before")
    @classmethod
    def _not_blank(cls, value: object, info: ValidationInfo) -> object:
        """A secret set to "" (or only blanks and commas) is a mistake, not "unset": refused at start."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and not _split(text):
            name = f"NEN_{str(info.field_name).upper()}"
            raise ValueError(f"{name} is set but empty: give its value or unset it")
        return value

    @field_validator("api_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, "") and info.field_name == "webhook_url":
            return None  # unset: no-webhook mode
        if not value or not value.startswith(("http://", "https://")):
            name = f"NEN_{str(info.field_name).upper()}"
            raise ValueError(f"{name} must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if info.field_name == "api_url" else value

    @field_validator("webhook_run_param")
    @classmethod
    def _run_param(cls, value: str) -> str:
        if value and not PARAM_RE.match(value):
            raise ValueError(
                "NEN_WEBHOOK_RUN_PARAM must be a query parameter name (letters, digits, _ . -), "
                f"got {value!r}"
            )
        return value

    @field_validator("retrieval_path", "lookup_path")
    @classmethod
    def _path_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, "") and info.field_name == "lookup_path":
            return None  # optional
        placeholder = "{message_id}" if info.field_name == "retrieval_path" else "{idempotency_key}"
        if not value or placeholder not in value or not value.startswith("/"):
            name = f"NEN_{str(info.field_name).upper()}"
            raise ValueError(f"{name} must start with / and contain {placeholder}")
        return value

    @model_validator(mode="after")
    def _broker_for_cluster_store(self) -> Settings:
        scheme = self.redis_url.split("://", 1)[0].lower()
        if scheme.endswith(("+cluster", "+sentinel")) and not self.broker_url:
            raise ValueError(
                "NEN_BROKER_URL must be set when NEN_REDIS_URL is a redis+cluster:// or "
                "redis+sentinel:// URL (the Celery broker cannot use it: give a redis://, "
                "sentinel:// or amqp:// broker URL)"
            )
        return self

    @model_validator(mode="after")
    def _visibility_covers_tasks(self) -> Settings:
        longest = self.submit_lease + self.reschedule_delay  # + the longest countdown held unacked
        # Callbacks are not counted: a callback may run longer than the visibility timeout. A
        # copy the broker redelivers while it runs finds its lease live (CallbackTask,
        # NEN_CALLBACK_LEASE, renewed by a heartbeat) and waits instead of running it twice.
        if self.visibility_timeout <= longest:
            raise ValueError(
                f"NEN_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must exceed the longest task "
                f"({longest:.0f}s: submit deadline + HTTP timeouts + 10 s + re-schedule delay), "
                "or the Redis broker redelivers tasks that are still running"
            )
        return self

    @property
    def submit_lease(self) -> float:
        """How long one submit_run may hold a run: its retry budget plus one slow last attempt."""
        return self.submit_deadline + self.connect_timeout + self.write_timeout + self.read_timeout + 10

    @property
    def failpoint_names(self) -> frozenset[str]:
        return frozenset(_split(self.failpoints))

    @field_validator("retry_statuses")
    @classmethod
    def _statuses(cls, value: str) -> str:
        for part in _split(value):
            if not part.isdigit() or not 400 <= int(part) <= 599:
                raise ValueError(f"NEN_RETRY_STATUSES: {part!r} is not an HTTP 4xx/5xx status")
        return value

    @property
    def retry_unknown(self) -> bool:
        """Resend when Nen may have the request: NEN_RETRY_AMBIGUOUS (or NEN_RETRY_READ_TIMEOUT)."""
        return self.retry_ambiguous or self.retry_read_timeout

    @property
    def retryable_statuses(self) -> frozenset[int]:
        return frozenset(int(p) for p in _split(self.retry_statuses))

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @cached_property
    def webhook_secrets(self) -> tuple[str, ...]:
        """Read on every webhook: split once (the settings are frozen)."""
        return tuple(_split(self.webhook_secret.get_secret_value() if self.webhook_secret else None))

    @cached_property
    def hint_keys(self) -> tuple[bytes, ...]:
        """Keys of the run hint's token (domain/hints.py), one derived from each NEN_WEBHOOK_SECRET
        entry: the first signs, all verify. Read on every hinted webhook: derived once."""
        return hint_keys(self.webhook_secrets)

    @property
    def secrets_keys(self) -> list[str]:
        return _split(self.secrets_key.get_secret_value() if self.secrets_key else None)

    def require(self, *names: str) -> None:
        """Raise ConfigurationError naming every listed setting that is unset."""
        missing = [f"NEN_{n.upper()}" for n in names if not getattr(self, n)]
        if missing:
            raise ConfigurationError(f"missing setting(s): {', '.join(missing)}")


# Values a host framework supplies (Django settings, Flask config): they win over the environment.
_overrides: dict[str, Any] = {}

# What other modules build from the settings and must drop when install_overrides changes them
# (runtime/context.py registers its cache). A hook, not an import: this module stays below them.
_on_change: list[Callable[[], None]] = []


def on_settings_change(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever ``install_overrides`` changes the settings (registered once)."""
    if hook not in _on_change:
        _on_change.append(hook)


def installed_override_values() -> dict[str, Any]:
    """A copy of the values ``install_overrides`` installed (Django's ``NEN_CELERY``, Flask's
    config), readable before the settings are loaded (the log redaction reads their secrets)."""
    return dict(_overrides)


def setting_name(key: str) -> str:
    """The field name for ``NEN_API_KEY``, ``API_KEY`` or ``api_key``; ConfigurationError if unknown."""
    name = key.lower()
    name = name.removeprefix("nen_")
    if name not in Settings.model_fields:
        raise ConfigurationError(f"unknown nen-celery setting {key!r}")
    return name


def install_overrides(values: Mapping[str, Any]) -> None:
    """Use ``values`` (keys as ``setting_name`` accepts) over the environment from now on.

    Process-wide, like the settings themselves (the cached settings and context are dropped);
    ``install_overrides({})`` goes back to the environment alone. Unknown names or invalid
    values raise ConfigurationError naming them, and change nothing.
    """
    names = {setting_name(key): value for key, value in values.items()}
    try:
        Settings(**names)
    except ValidationError as exc:  # one clear message, values hidden
        raise ConfigurationError(f"invalid settings: {describe(exc)}") from None
    with _loading:  # never half-replaced under a load
        _overrides.clear()
        _overrides.update(names)
        _loaded.clear()
    for hook in list(_on_change):
        hook()


# The settings once loaded; the lock is held to build, change or forget them: a load that read
# the environment before a change is never kept after it (a worker thread's first use racing one).
_loaded: list[Settings] = []
_loading = threading.Lock()


def get_settings() -> Settings:
    """The process's settings: installed overrides first, then the environment, on first use."""
    with _loading:
        if not _loaded:
            try:
                _loaded.append(Settings(**_overrides))
            except ValidationError as exc:
                raise ConfigurationError(f"invalid settings: {describe(exc)}") from None
        return _loaded[0]


def loaded_settings() -> Settings | None:
    """The settings if something loaded them already, else None (never loads them)."""
    with _loading:
        return _loaded[0] if _loaded else None


def describe(exc: ValidationError) -> str:
    """Each problem as ``NEN_<NAME>: <why>``, the variable a user sets; never the value given."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return "; ".join(
        f"{'NEN_' + '.'.join(str(p) for p in e['loc']).upper() if e['loc'] else 'settings'}: {e['msg']}"
        for e in errors
    )


def reset_settings(**_: Any) -> None:
    """Forget the cached settings (tests and CLI re-read the environment)."""
    with _loading:
        _loaded.clear()
