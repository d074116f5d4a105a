"""One settings object, read from ``INFERLAB_*`` environment variables with defaults.

Every field is documented by its ``doc`` metadata; ``inferlab config`` prints the table and
docs/operations.md carries it. A service that needs its own settings adds a field here, so the
complete list of environment variables lives in one place (compose.yaml is tested against it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "INFERLAB_"


def _default_home() -> str:
    return str(Path("~/.inferlab").expanduser())


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # --- NATS connection ---
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds: str | None = None
    nats_tls_ca: str | None = None
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    nats_inbox_prefix: str = ""
    connect_timeout_s: float = 2.0
    # --- data and logging ---
    home: str = msgspec.field(default_factory=_default_home)
    log_level: str = "info"
    log_format: str = "json"
    # --- JetStream layout ---
    stream_replicas: int = 1
    duplicate_window_s: float = 120.0
    models_max_age_days: float = 0.0
    alerts_max_age_days: float = 365.0
    telemetry_max_age_hours: float = 72.0
    telemetry_max_bytes: int = 1 << 30
    uploads_max_age_hours: float = 24.0
    uploads_max_bytes: int = 8 << 30
    artifact_bucket: str = "artifacts"
    registry_bucket: str = "registry"
    announced_bucket: str = "announced"
    announced_max_age_days: float = 30.0
    # --- consumers ---
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    fetch_batch: int = 16
    dependency_wait_s: float = 300.0
    # --- limits and import policy ---
    max_artifact_bytes: int = 2 << 30
    max_dataset_bytes: int = 2 << 30
    max_message_bytes: int = 1 << 20
    import_roots: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ("nats-obj", "upload", "file", "https", "http")
    http_timeout_s: float = 60.0
    fetch_hosts: tuple[str, ...] = ()
    fetch_allow_private: bool = False
    # --- registry ---
    registry_concurrency: int = 8
    # --- embedded server ---
    embedded_nats_port: int = 4222
    embedded_nats_monitor_port: int = 0
    # --- converter (block owned by services/converter) ---
    converter_profiles: tuple[str, ...] = ("ort-opt", "fp16", "int8-dynamic")
    converter_concurrency: int = 1
    converter_parity_samples: int = 256
    # --- benchmarker (block owned by services/benchmarker) ---
    history_path: str = ""
    history_retention_days: float = 0.0
    history_samples_per_run: int = 0
    telemetry_retention_days: float = 30.0
    bench_warmup_s: float = 0.5
    bench_window_s: float = 0.5
    bench_min_duration_s: float = 1.5
    bench_max_duration_s: float = 10.0
    bench_stability_threshold: float = 0.10
    regression_p_threshold: float = 0.002
    regression_effect_threshold: float = 1.10
    sql_max_rows: int = 10_000
    sql_timeout_s: float = 10.0
    anomaly_window: int = 200
    anomaly_z_threshold: float = 4.0
    anomaly_min_interval_s: float = 60.0
    bench_auto: bool = True
    bench_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    bench_batch_sizes: str = "1"
    # --- validator (block owned by services/validator) ---
    validator_max_samples: int = 10_000
    validator_attack_epsilon: float = 0.05
    validator_attack_queries: int = 2_000
    validator_attack_time_s: float = 20.0
    validator_attack_samples: int = 100
    validator_noise_samples: int = 2_000
    validator_bootstrap: int = 1_000
    validator_folds: int = 5
    validator_structural_samples: int = 16
    validator_batch_size: int = 512
    validator_concurrency: int = 1
    validator_policy_dir: str = ""
    validator_ready_without_dataset: bool = False
    # --- sandbox: native calls on users' models (block owned by shared/sandbox.py) ---
    sandbox_workers: int = 2
    sandbox_memory_bytes: int = 4 << 30
    sandbox_memory_model_factor: float = 16.0
    sandbox_verify_timeout_s: float = 300.0
    sandbox_convert_timeout_s: float = 3600.0
    sandbox_validate_timeout_s: float = 3600.0
    sandbox_max_tasks: int = 200

    @property
    def inbox_prefix(self) -> str:
        """Where this client's replies arrive: ``_INBOX.<user>`` for a named NATS user (the
        shipped server config lets each user subscribe only there), ``_INBOX`` without one."""
        if self.nats_inbox_prefix:
            return self.nats_inbox_prefix.rstrip(".")
        return f"_INBOX.{self.nats_user}" if self.nats_user else "_INBOX"

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def effective_history_path(self) -> Path:
        return Path(self.history_path).expanduser() if self.history_path else self.home_path / "history.duckdb"

    @property
    def effective_import_roots(self) -> tuple[Path, ...]:
        roots = self.import_roots or (str(self.home_path / "imports"),)
        return tuple(Path(r).expanduser() for r in roots)

    def with_overrides(self, **changes: Any) -> Settings:
        return msgspec.structs.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        env = {}
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            env[env_name(field.name)] = ",".join(value) if isinstance(value, tuple) else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            key = env_name(field.name)
            if key not in env:
                continue
            value = env[key]
            if _is_tuple_field(field.type):
                raw[field.name] = [v.strip() for v in value.replace(os.pathsep, ",").split(",") if v.strip()]
            elif value == "" and _is_optional(field.type):
                raw[field.name] = None
            else:
                raw[field.name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"invalid setting: {exc} (environment variables {ENV_PREFIX}*)") from exc


class SettingsError(ValueError):
    pass


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _is_tuple_field(tp: Any) -> bool:
    return getattr(tp, "__origin__", None) is tuple


def _is_optional(tp: Any) -> bool:
    return type(None) in getattr(tp, "__args__", ())


FIELD_DOCS: dict[str, str] = {
    "nats_url": "NATS server URL(s), comma-separated for a cluster.",
    "nats_user": "NATS user name (with INFERLAB_NATS_PASSWORD).",
    "nats_password": "NATS password. Never logged.",
    "nats_token": "NATS auth token. Never logged.",
    "nats_creds": "Path to a NATS .creds file (JWT auth).",
    "nats_tls_ca": "CA certificate to verify the NATS server (enables TLS).",
    "nats_tls_cert": "Client certificate for mutual TLS.",
    "nats_tls_key": "Client key for mutual TLS.",
    "nats_inbox_prefix": "Prefix of this client's reply inboxes (default: _INBOX.<user> with a user, else _INBOX).",
    "connect_timeout_s": "Seconds to wait for the first NATS connection.",
    "home": "Data dir: embedded NATS store, DuckDB history, imports/, scratch space.",
    "log_level": "debug, info, warning or error.",
    "log_format": "json (services) or console.",
    "stream_replicas": "Replicas of every stream, KV and object bucket (1 embedded, 3 in a cluster).",
    "duplicate_window_s": "JetStream duplicate window for Nats-Msg-Id dedupe.",
    "models_max_age_days": "Retention of the MODELS stream (0 = forever).",
    "alerts_max_age_days": "Retention of the ALERTS stream.",
    "telemetry_max_age_hours": "Retention of the TELEMETRY stream by age.",
    "telemetry_max_bytes": "Retention of the TELEMETRY stream by size.",
    "uploads_max_age_hours": "Hours a staged upload (upload://) is kept for the registry to take it in.",
    "uploads_max_bytes": "Most bytes of staged uploads kept at once (a full area refuses new uploads).",
    "artifact_bucket": "Object Store bucket holding model and dataset blobs.",
    "registry_bucket": "Key-Value bucket holding registry metadata.",
    "announced_bucket": "Key-Value bucket recording every fact a service published (exactly once).",
    "announced_max_age_days": "Days a fact's record is kept (a redelivery later than this could republish it).",
    "max_deliver": "Deliveries before a failing message is dead-lettered.",
    "ack_wait_s": "Seconds before an unacknowledged message is redelivered (handlers heartbeat).",
    "fetch_batch": "Messages fetched per pull request.",
    "dependency_wait_s": "Seconds a handler holds its message while a service it asks (the registry) is down.",
    "max_artifact_bytes": "Largest model artifact accepted.",
    "max_dataset_bytes": "Largest dataset accepted.",
    "max_message_bytes": "Largest message a service decodes (NATS max_payload by default).",
    "import_roots": "Folders file:// imports may read from (default: <home>/imports).",
    "allowed_schemes": "URI schemes accepted for artifacts and datasets.",
    "http_timeout_s": "Timeout for http(s) artifact downloads.",
    "fetch_hosts": "Hosts (names, addresses or CIDR networks) http(s) URIs may name; empty: any public host. "
    "A host listed here may resolve to a private address.",
    "fetch_allow_private": "Let any http(s) host resolve to loopback, private or link-local addresses (dev only).",
    "registry_concurrency": "Registrations one registry replica handles at once.",
    "embedded_nats_port": "Client port of the embedded nats-server started by `inferlab up`.",
    "embedded_nats_monitor_port": "HTTP monitoring port of the embedded server (0 = off).",
    # converter
    "converter_profiles": "Profiles run automatically on every base model.",
    "converter_concurrency": "Conversions one converter replica runs at once.",
    "converter_parity_samples": "Most samples used for a parity check.",
    # benchmarker
    "history_path": "DuckDB history file (default: <home>/history.duckdb).",
    "history_retention_days": "Benchmark runs, facts and alerts older than this are deleted hourly (0: kept forever).",
    "history_samples_per_run": "Raw latency samples kept per run, thinned evenly (0: all of them).",
    "telemetry_retention_days": "Production latency samples and batches older than this are deleted hourly (0: kept).",
    "bench_warmup_s": "Warm-up seconds before measuring.",
    "bench_window_s": "Length of one measurement window in seconds.",
    "bench_min_duration_s": "Least measuring time per configuration.",
    "bench_max_duration_s": "Most measuring time per configuration (then flagged unstable).",
    "bench_stability_threshold": "Last three windows must agree within this fraction.",
    "regression_p_threshold": "One-sided Mann-Whitney p-value below which a slowdown is significant.",
    "regression_effect_threshold": "Median ratio above which a significant slowdown is a regression.",
    "sql_max_rows": "Most rows `inferlab sql` returns.",
    "sql_timeout_s": "Longest time a read-only SQL query may run.",
    "anomaly_window": "Production samples per rolling window checked for anomalies.",
    "anomaly_z_threshold": "Robust z-score of a window median that opens an incident.",
    "anomaly_min_interval_s": "Least seconds between two alerts of one model (rate limit).",
    "bench_auto": "Benchmark every registered variant automatically (default config).",
    "bench_providers": "Execution providers of the default config (unavailable ones are skipped).",
    "bench_batch_sizes": "Batch sizes of the default config, comma-separated (e.g. 1,8).",
    # validator
    "validator_max_samples": "Most dataset samples one validation uses.",
    "validator_attack_epsilon": "L-infinity budget of the adversarial attack (fraction of the input range).",
    "validator_attack_queries": "Most model queries the adversarial attack may spend on one sample.",
    "validator_attack_time_s": "Longest time the adversarial attack may run.",
    "validator_attack_samples": "Samples the adversarial attack is run on (a seeded subset).",
    "validator_noise_samples": "Samples the noise-robustness curve is measured on (a seeded subset).",
    "validator_bootstrap": "Bootstrap resamples for the 95% confidence intervals.",
    "validator_folds": "Stratified folds for the spread of the headline metrics.",
    "validator_structural_samples": "Seeded samples for the structural check (and parity without a dataset).",
    "validator_batch_size": "Samples per inference call (a model with a fixed batch size uses its own).",
    "validator_concurrency": "Validations one validator replica runs at once.",
    "validator_ready_without_dataset": "A model validated without a dataset (structure, speed only) may be READY.",
    "validator_policy_dir": "Folder of per-model policy files <name>.json|.toml (default: <home>/policies).",
    # sandbox
    "sandbox_workers": "Most sandbox worker processes per service (capped by its concurrency); one starts with it.",
    "sandbox_memory_bytes": "Least address space one native call on a model may add (RLIMIT_AS headroom).",
    "sandbox_memory_model_factor": "Headroom as a multiple of the model's size when that is larger.",
    "sandbox_verify_timeout_s": "Longest wall time of the registry's verification of one model.",
    "sandbox_convert_timeout_s": "Longest wall time of one profile's conversion and parity check.",
    "sandbox_validate_timeout_s": "Longest wall time of one validation's suite (inference and checks).",
    "sandbox_max_tasks": "Tasks a sandbox worker runs before it is replaced by a fresh one.",
}
SECRET_FIELDS = frozenset({"nats_password", "nats_token"})


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, doc) for every setting."""
    rows = []
    defaults = Settings()
    for field in msgspec.structs.fields(Settings):
        default = getattr(defaults, field.name)
        if field.name == "home":
            default = "~/.inferlab"
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append((env_name(field.name), "" if default is None else str(default), FIELD_DOCS[field.name]))
    return rows


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as a dict with secrets masked, for logs and ``inferlab config``."""
    out = msgspec.structs.asdict(settings)
    for key in SECRET_FIELDS:
        if out.get(key):
            out[key] = "***"
    return out
