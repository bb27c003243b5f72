"""The one settings object of a mindstream process, built from environment variables here only.

Every setting is a field of :class:`Settings` with its environment variable, default and a
one-line description in the field metadata; the README's settings table is generated from
them (``mindstream settings --markdown``) and a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mindstream.errors import ConfigError


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class KafkaProfile:
    """Client settings that depend on which Kafka-protocol broker is on the other end.

    ``standard`` is for Apache Kafka (and anything fully compatible). ``local`` works around the
    measured quirks of the local Tansu broker (docs/ARCHITECTURE.md, "Local broker"); it must
    never be the silent default for a real cluster.
    """

    name: str
    # Tansu answers "latest offset" wrongly for multi-record batches, which stops Faust's
    # changelog recovery early; one record per producer batch keeps recovery exact.
    producer_max_batch_size: int | None
    # Group joins take about half the session timeout on Tansu; short timeouts keep tests fast.
    session_timeout_ms: int
    heartbeat_interval_ms: int
    # aiokafka's idempotent/transactional producer fails against Tansu.
    idempotent_producer: bool
    # The stream worker produces its window changelog a micro-batch at a time in multi-record
    # batches; on Tansu the last batch of each partition must then hold a single record, so
    # that "latest offset" (the last batch's first offset + 1 there) is exact.
    single_record_tail_batch: bool
    # The longest a fetch of the worker's consumer waits (Faust hard-codes 1.5 s; None keeps it).
    # Tansu answers a waiting fetch only when the wait expires, not when data arrives (p50 366
    # ms, p95 713 ms at 20 msg/s; 3 and 6 ms with a 50 ms wait). On Apache Kafka a fetch in
    # flight also holds back the partitions aiokafka left out of it (their records were still
    # being consumed when it was sent) for as long as the fetched ones get no data: at 3,000
    # events/s on 8 partitions, freshness p50 / p99 297 ms / 2.1 s with 1.5 s, 121 / 738 ms with
    # 50 ms (BENCHMARKS.md, "Apache Kafka and Tansu"). An idle consumer then polls 20 times a s.
    consumer_fetch_max_wait_ms: int | None


KAFKA_PROFILES: dict[str, KafkaProfile] = {
    "standard": KafkaProfile(
        name="standard",
        producer_max_batch_size=None,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=3_000,
        idempotent_producer=True,
        single_record_tail_batch=False,
        consumer_fetch_max_wait_ms=50,
    ),
    "local": KafkaProfile(
        name="local",
        producer_max_batch_size=1,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        idempotent_producer=False,
        single_record_tail_batch=True,
        consumer_fetch_max_wait_ms=50,
    ),
}


@dataclass(frozen=True)
class Settings:
    """Everything a mindstream process can be told, with defaults that work locally."""

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", "Kafka bootstrap servers, comma separated."
    )
    kafka_profile: str = _setting(
        "MINDSTREAM_KAFKA_PROFILE",
        "standard",
        "Broker profile: `standard` (Apache Kafka) or `local` (quirks of the local Tansu broker).",
    )
    kafka_session_timeout_ms: int = _setting(
        "MINDSTREAM_KAFKA_SESSION_TIMEOUT_MS",
        0,
        "Consumer group session timeout; 0 = the profile's (30000 standard, 6000 local). A "
        "SIGKILLed worker's partitions wait this long before another member gets them.",
    )
    kafka_security_protocol: str = _setting(
        "MINDSTREAM_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; passed to every Kafka client.",
    )
    kafka_sasl_mechanism: str = _setting(
        "MINDSTREAM_KAFKA_SASL_MECHANISM", "", "SASL mechanism (PLAIN, SCRAM-SHA-256, ...)."
    )
    kafka_sasl_username: str = _setting("MINDSTREAM_KAFKA_SASL_USERNAME", "", "SASL user name.")
    kafka_sasl_password: str = _setting("MINDSTREAM_KAFKA_SASL_PASSWORD", "", "SASL password.")
    kafka_ssl_cafile: str = _setting(
        "MINDSTREAM_KAFKA_SSL_CAFILE", "", "CA bundle used to verify the brokers (SSL only)."
    )
    clicks_topic: str = _setting("MINDSTREAM_CLICKS_TOPIC", "clicks", "Topic the clicks land on.")
    dlq_topic: str = _setting(
        "MINDSTREAM_DLQ_TOPIC", "clicks.dlq", "Dead-letter topic for events that fail validation."
    )
    topic_partitions: int = _setting(
        "MINDSTREAM_TOPIC_PARTITIONS", 8, "Partitions used when mindstream creates its topics."
    )
    topic_replication_factor: int = _setting(
        "MINDSTREAM_TOPIC_REPLICATION_FACTOR",
        1,
        "Replicas of the topics the worker creates (window changelog, re-key topic); set it to "
        "the cluster's replication (e.g. 3) so a broker loss keeps them available.",
    )
    app_id: str = _setting(
        "MINDSTREAM_APP_ID",
        "mindstream",
        "Faust app id: the consumer group and the prefix of changelog topics.",
    )

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str = _setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis URL (`rediss://` for TLS; user and password in the URL for ACL/AUTH).",
    )
    redis_prefix: str = _setting(
        "MINDSTREAM_REDIS_PREFIX", "mind:", "Prefix of every Redis key mindstream writes."
    )
    redis_ssl_ca_file: str = _setting(
        "MINDSTREAM_REDIS_SSL_CA_FILE",
        "",
        "CA bundle that verifies the Redis server certificate (`rediss://` only; empty: the "
        "system CAs). Certificate and host name are always verified.",
    )
    redis_ssl_cert_file: str = _setting(
        "MINDSTREAM_REDIS_SSL_CERT_FILE",
        "",
        "Client certificate for Redis servers that require one (`tls-auth-clients`).",
    )
    redis_ssl_key_file: str = _setting(
        "MINDSTREAM_REDIS_SSL_KEY_FILE", "", "Private key of the Redis client certificate."
    )
    redis_cluster: bool = _setting(
        "MINDSTREAM_REDIS_CLUSTER",
        False,
        "`REDIS_URL` is a node of a Redis Cluster: every process uses a cluster client (the "
        "worker writes each batch with one script call per master; Redis 7.0 or later). "
        "Checked against the server at start.",
    )

    # --- Model bundle ------------------------------------------------------------------------
    bundle_path: str = _setting(
        "MINDSTREAM_BUNDLE",
        "bundles/current",
        "Bundle directory, or a `current` link to one, used by the stream worker and recall.",
    )
    onnx_provider: str = _setting(
        "MINDSTREAM_ONNX_PROVIDER",
        "auto",
        "onnxruntime execution provider: `auto` (CUDA when present, else CPU), `cuda` or `cpu`.",
    )
    onnx_threads: int = _setting(
        "MINDSTREAM_ONNX_THREADS", 0, "Intra-op threads for the user tower (0 = onnxruntime's)."
    )

    # --- Stream worker -----------------------------------------------------------------------
    window_max_len: int = _setting(
        "MINDSTREAM_WINDOW_MAX_LEN", 50, "Behaviours kept per user (newest by event time)."
    )
    window_horizon_s: int = _setting(
        "MINDSTREAM_WINDOW_HORIZON_S",
        30 * 24 * 3600,
        "Behaviours older than this (event time, relative to the user's newest) are dropped.",
    )
    batch_size: int = _setting(
        "MINDSTREAM_BATCH_SIZE", 1000, "Events per micro-batch (recompute + one Redis pipeline)."
    )
    batch_deadline_ms: int = _setting(
        "MINDSTREAM_BATCH_DEADLINE_MS",
        20,
        "Longest time the oldest record of a partly filled micro-batch waits for more before the "
        "batch is processed (the next batch is gathered while one is processed).",
    )
    table_store: str = _setting(
        "MINDSTREAM_TABLE_STORE",
        "memory://",
        "Faust table store: `memory://`, or `rocksdb://` (needs rocksdict) in production.",
    )
    data_dir: str = _setting(
        "MINDSTREAM_DATA_DIR", "var", "Folder for worker state, service logs and PID files."
    )
    worker_web_host: str = _setting(
        "MINDSTREAM_WORKER_WEB_HOST",
        "127.0.0.1",
        "Address the worker's health and /metrics endpoint binds to (`0.0.0.0`: every interface, "
        "e.g. for a Prometheus in another container).",
    )
    worker_web_port: int = _setting(
        "MINDSTREAM_WORKER_WEB_PORT", 6066, "Port of the worker's health and /metrics endpoint."
    )
    event_max_skew_s: int = _setting(
        "MINDSTREAM_EVENT_MAX_SKEW_S",
        300,
        "Click events stamped further than this in the future (worker clock) are dead-lettered.",
    )
    stream_watch_interval_s: float = _setting(
        "MINDSTREAM_STREAM_WATCH_INTERVAL_S",
        5.0,
        "How often the worker checks the bundle link for a new version (0 = never).",
    )
    stream_retry_max_s: float = _setting(
        "MINDSTREAM_STREAM_RETRY_MAX_S",
        5.0,
        "Longest pause between retries of a failed Redis write (backoff doubles up to it).",
    )
    redis_wait_replicas: int = _setting(
        "MINDSTREAM_REDIS_WAIT_REPLICAS",
        0,
        "Replicas that must hold a batch's records before the worker commits it (Redis WAIT "
        "on every node written; 0 = do not wait). With 1, a master failover loses no "
        "committed record.",
    )
    redis_wait_timeout_ms: int = _setting(
        "MINDSTREAM_REDIS_WAIT_TIMEOUT_MS",
        1000,
        "How long that WAIT may block; fewer replicas by then fail the write, which is retried.",
    )
    stream_redis_refused_exit_s: float = _setting(
        "MINDSTREAM_STREAM_REDIS_REFUSED_EXIT_S",
        30.0,
        "A Redis error that retrying cannot fix (TLS verification, wrong password, NOAUTH, "
        "NOPERM, CROSSSLOT, unknown command, a script Redis will not load) ends the worker "
        "after this long (exit status 78); transient errors are retried without end.",
    )
    stream_producer_linger_ms: int = _setting(
        "MINDSTREAM_STREAM_PRODUCER_LINGER_MS",
        10,
        "How long the worker's producer gathers changelog, dead-letter and re-key records "
        "into one request (not on the Redis freshness path).",
    )
    stream_shutdown_grace_s: float = _setting(
        "MINDSTREAM_STREAM_SHUTDOWN_GRACE_S",
        15.0,
        "A stopping worker whose batch cannot be written exits after this, without committing.",
    )
    stream_broker_wait_s: float = _setting(
        "MINDSTREAM_STREAM_BROKER_WAIT_S",
        60.0,
        "A starting worker waits this long for a Kafka broker to answer (retrying, one log line "
        "per try), then exits with an error naming KAFKA_BOOTSTRAP_SERVERS.",
    )
    stream_allow_offset_gaps: bool = _setting(
        "MINDSTREAM_STREAM_ALLOW_OFFSET_GAPS",
        False,
        "Accept a click record whose offset is beyond the next expected one of its partition "
        "(true only for topics with real offset gaps: transactional producers, compaction). "
        "When false the worker exits without committing, so that skipped records are replayed.",
    )
    processing_guarantee: str = _setting(
        "MINDSTREAM_PROCESSING_GUARANTEE",
        "at_least_once",
        "`at_least_once` (the only mode the worker runs; Redis records stay exact through the "
        "window's offset de-duplication and the record's monotonic `seq`) or `exactly_once`, "
        'which the worker refuses at start-up with the reason (RELIABILITY.md, "Processing '
        'guarantee").',
    )

    # --- Recall service ----------------------------------------------------------------------
    recall_host: str = _setting(
        "MINDSTREAM_RECALL_HOST", "127.0.0.1", "Address the recall service binds to."
    )
    recall_port: int = _setting("MINDSTREAM_RECALL_PORT", 8080, "Port of the recall service.")
    recall_workers: int = _setting(
        "MINDSTREAM_RECALL_WORKERS",
        1,
        "Recall service processes behind one port: the first process builds or checks the "
        "cached index, binds the port, starts this many serving processes, hands each new "
        "connection to the next of them in turn, and stops them all if one dies. Set it to "
        "about the cores recall may use.",
    )
    recall_reuse_port: bool = _setting(
        "MINDSTREAM_RECALL_REUSE_PORT",
        False,
        "Bind the recall port with SO_REUSEPORT (Linux): several services started apart can "
        "share it, and `MINDSTREAM_RECALL_WORKERS` processes each accept their own connections "
        "instead of being handed them in turn. The kernel spreads connections by a hash of "
        "their address: unevenly for a few keep-alive connections, cheaper for a new "
        "connection per request.",
    )
    recall_index: str = _setting(
        "MINDSTREAM_RECALL_INDEX",
        "auto",
        "Item index kind: `auto` (`flat` up to the exact-search limit, `ivfpq` above), `flat` "
        "(exact), `ivfpq` (IVF lists of 4-bit fast-scan PQ codes, shortlist re-ranked exactly), "
        "`ivf` (IVF lists of float vectors) or `hnsw`.",
    )
    recall_exact_max_items: int = _setting(
        "MINDSTREAM_RECALL_EXACT_MAX_ITEMS",
        50_000,
        "With `auto`, catalogues up to this size use exact search.",
    )
    recall_hnsw_m: int = _setting("MINDSTREAM_RECALL_HNSW_M", 32, "HNSW graph degree.")
    recall_hnsw_ef_construction: int = _setting(
        "MINDSTREAM_RECALL_HNSW_EF_CONSTRUCTION", 80, "HNSW build-time beam width."
    )
    recall_hnsw_ef_search: int = _setting(
        "MINDSTREAM_RECALL_HNSW_EF_SEARCH", 128, "HNSW query-time beam width."
    )
    recall_ivf_nlist: int = _setting(
        "MINDSTREAM_RECALL_IVF_NLIST",
        0,
        "IVF cluster count of `ivf` (0 = 4·√items, at most items/39; 4,000 lists at 1M items).",
    )
    recall_ivf_nprobe: int = _setting(
        "MINDSTREAM_RECALL_IVF_NPROBE", 64, "IVF clusters visited per query by `ivf`."
    )
    recall_ivfpq_nlist: int = _setting(
        "MINDSTREAM_RECALL_IVFPQ_NLIST",
        0,
        "IVF cluster count of `ivfpq` (0 = √items, at most items/39; 1,000 lists at 1M items).",
    )
    recall_ivfpq_nprobe: int = _setting(
        "MINDSTREAM_RECALL_IVFPQ_NPROBE", 20, "IVF clusters visited per query by `ivfpq`."
    )
    recall_pq_m: int = _setting(
        "MINDSTREAM_RECALL_PQ_M",
        0,
        "Sub-quantizers of an `ivfpq` code, 4 bits each; must divide the embedding dimension "
        "(0 = one per dimension: 32 bytes per item at d = 64).",
    )
    recall_rerank_factor: int = _setting(
        "MINDSTREAM_RECALL_RERANK_FACTOR",
        2,
        "`ivfpq` shortlist per interest, as a multiple of the items asked for; the shortlist is "
        "re-ranked by exact inner product with the float embeddings.",
    )
    recall_default_n: int = _setting(
        "MINDSTREAM_RECALL_DEFAULT_N", 50, "Candidates returned when a request gives no `n`."
    )
    recall_max_n: int = _setting(
        "MINDSTREAM_RECALL_MAX_N", 1000, "Largest `n` a candidates request may ask for."
    )
    recall_diversity: float = _setting(
        "MINDSTREAM_RECALL_DIVERSITY",
        0.0,
        "Default λ in [0, 1] of the diversity-aware merge (ComiRec's controllable aggregation): "
        "0 = best score first; above 0 each pick costs a candidate λ per item of its category "
        "already picked. Above 0 the bundle must carry item categories.",
    )
    recall_batch_max_users: int = _setting(
        "MINDSTREAM_RECALL_BATCH_MAX_USERS", 1000, "Most users in one batch candidates request."
    )
    recall_index_dir: str = _setting(
        "MINDSTREAM_RECALL_INDEX_DIR",
        "",
        "Where built item indexes are cached (empty: beside the bundle, in its parent folder).",
    )
    recall_watch_interval_s: float = _setting(
        "MINDSTREAM_RECALL_WATCH_INTERVAL_S",
        5.0,
        "How often recall checks the bundle link for a new version (0 = never).",
    )
    recall_keep_versions: int = _setting(
        "MINDSTREAM_RECALL_KEEP_VERSIONS",
        2,
        "Bundle versions whose indexes recall keeps loaded (the current one and older ones).",
    )
    recall_search_threads: int = _setting(
        "MINDSTREAM_RECALL_SEARCH_THREADS",
        1,
        "OpenMP threads per Faiss search in recall (0 = Faiss default). 1 keeps latency low on "
        "shared cores: a parallel search stalls whenever one of its threads is descheduled.",
    )
    recall_precompute_ttl_s: int = _setting(
        "MINDSTREAM_RECALL_PRECOMPUTE_TTL_S",
        7 * 24 * 3600,
        "Expiry of precomputed candidates in Redis (0 = never); refreshed on every update.",
    )
    recall_redis_timeout_ms: int = _setting(
        "MINDSTREAM_RECALL_REDIS_TIMEOUT_MS",
        250,
        "Connect and read timeout of recall's Redis calls; past it a request answers 503.",
    )

    # --- Process -----------------------------------------------------------------------------
    log_level: str = _setting("MINDSTREAM_LOG_LEVEL", "INFO", "Python log level.")

    @property
    def profile(self) -> KafkaProfile:
        return KAFKA_PROFILES[self.kafka_profile]

    @property
    def group_session_timeout_ms(self) -> int:
        """The consumer group session timeout: the setting, else the profile's."""
        return self.kafka_session_timeout_ms or self.profile.session_timeout_ms

    @property
    def group_heartbeat_interval_ms(self) -> int:
        """The profile's heartbeat interval, at most a third of the session timeout (Kafka's
        advice, so that two heartbeats can be missed before the session ends)."""
        return min(self.profile.heartbeat_interval_ms, self.group_session_timeout_ms // 3)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = _parse(name, env[name], hints[f.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.kafka_profile not in KAFKA_PROFILES:
            raise ConfigError(
                f"MINDSTREAM_KAFKA_PROFILE={self.kafka_profile!r}: expected one of "
                f"{sorted(KAFKA_PROFILES)}"
            )
        _choice(
            "MINDSTREAM_PROCESSING_GUARANTEE",
            self.processing_guarantee,
            {"at_least_once", "exactly_once"},
        )
        _choice("MINDSTREAM_ONNX_PROVIDER", self.onnx_provider, {"auto", "cuda", "cpu"})
        _choice(
            "MINDSTREAM_RECALL_INDEX", self.recall_index, {"auto", "flat", "hnsw", "ivf", "ivfpq"}
        )
        _choice(
            "MINDSTREAM_LOG_LEVEL",
            self.log_level.upper(),
            {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"},
        )
        self._validate_kafka_security()
        self._validate_redis_tls()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # `not value >= 0` also refuses NaN.
            if isinstance(value, int | float) and not isinstance(value, bool) and not value >= 0:
                raise ConfigError(f"{f.metadata['env']}={value}: expected a number >= 0")
        for name in (
            "window_max_len",
            "batch_size",
            "topic_partitions",
            "topic_replication_factor",
            "recall_rerank_factor",
            "recall_workers",
        ):
            if getattr(self, name) < 1:
                env = self.__dataclass_fields__[name].metadata["env"]
                raise ConfigError(f"{env}={getattr(self, name)}: expected a number >= 1")
        if not self.recall_diversity <= 1.0:
            raise ConfigError(
                f"MINDSTREAM_RECALL_DIVERSITY={self.recall_diversity}: expected a number in [0, 1]"
            )

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        _choice(
            "MINDSTREAM_KAFKA_SECURITY_PROTOCOL",
            protocol,
            {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"},
        )
        if not protocol.startswith("SASL_"):
            return
        mechanism = self.kafka_sasl_mechanism
        _choice(
            f"MINDSTREAM_KAFKA_SASL_MECHANISM (needed with {protocol})",
            mechanism,
            {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"},
        )
        if mechanism != "GSSAPI" and not self.kafka_sasl_username:
            raise ConfigError(
                f"MINDSTREAM_KAFKA_SASL_USERNAME is empty: SASL {mechanism} needs a user name "
                "(and MINDSTREAM_KAFKA_SASL_PASSWORD)"
            )

    def _validate_redis_tls(self) -> None:
        tls_files = {
            "MINDSTREAM_REDIS_SSL_CA_FILE": self.redis_ssl_ca_file,
            "MINDSTREAM_REDIS_SSL_CERT_FILE": self.redis_ssl_cert_file,
            "MINDSTREAM_REDIS_SSL_KEY_FILE": self.redis_ssl_key_file,
        }
        given = [env for env, value in tls_files.items() if value]
        if given and not self.redis_url.startswith("rediss://"):
            # Refuse rather than silently talk to Redis in clear text.
            raise ConfigError(
                f"{', '.join(given)} set but REDIS_URL is not rediss://: use a rediss:// URL "
                "for TLS, or unset the TLS files"
            )
        if bool(self.redis_ssl_cert_file) != bool(self.redis_ssl_key_file):
            raise ConfigError(
                "MINDSTREAM_REDIS_SSL_CERT_FILE and MINDSTREAM_REDIS_SSL_KEY_FILE go together: "
                "set both (client certificate and its key) or neither"
            )

    def as_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _choice(env: str, value: str, allowed: set[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{env}={value!r}: expected one of {sorted(allowed)}")


def _parse(env: str, raw: str, kind: Any) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw.replace("_", ""))
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        expected = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind)
        raise ConfigError(f"{env}={raw!r}: expected {expected}") from None


def known_env() -> set[str]:
    """Every environment variable the settings object reads."""
    return {f.metadata["env"] for f in dataclasses.fields(Settings)}


def describe() -> Iterator[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    for f in dataclasses.fields(Settings):
        yield f.metadata["env"], str(f.default), f.metadata["doc"]


def markdown_table() -> str:
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for env, default, doc in describe():
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{env}` | {shown} | {doc} |")
    return "\n".join(rows)
