"""TLS and basic auth for the endpoint, from a Prometheus exporter-toolkit web config file.

The same file format as blackbox_exporter's ``--web.config.file``, so scrapes across the
VPC can be locked down the same way::

    tls_server_config:
      cert_file: /etc/probe/tls.crt
      key_file: /etc/probe/tls.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
      client_ca_file: /etc/probe/scrapers-ca.pem
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')

Supported keys are those above (plus ``max_version``); others are refused by name rather
than silently ignored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from probe._files import MAX_CONFIG_BYTES, MAX_PEM_BYTES, FileRefused, check_capped, read_text_capped
from probe._text import openssl_words
from probe.config.errors import ConfigError

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_SUPPORTED_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
#: A bcrypt hash as htpasswd -B, Apache and exporter-toolkit's users write it: version,
#: cost (4-31), 22 characters of salt and 31 of hash in bcrypt's base64 alphabet.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$([./A-Za-z0-9]{22})[./A-Za-z0-9]{31}")

#: bcrypt uses the first 72 bytes of a password; a longer one is refused (401), as Go's
#: bcrypt (exporter-toolkit) refuses it, rather than checked as its first 72 bytes.
MAX_PASSWORD_BYTES = 72

#: Successful checks remembered, so that a scraper's every scrape does not pay bcrypt's
#: cost. Only a valid password makes an entry, so a flood of wrong ones cannot push the
#: scraper's out (exporter-toolkit's one cache of 100 remembers failures too, evicted at random).
GOOD_CACHE_SIZE = 64

#: The longest rest of the bcrypt thread after a failed check (seconds): as long as the
#: check took, so wrong passwords use at most half of one core, up to this.
MAX_REST_SECONDS = 1.0


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsServerConfig(_Strict):
    """``tls_server_config``: the endpoint's certificate and client verification."""

    cert_file: Path
    key_file: Path
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"

    @field_validator("client_auth_type")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value not in _SUPPORTED_CLIENT_AUTH:
            raise ValueError(
                f"{value} (accepting client certificates without verifying them) is not "
                f"supported; use one of {', '.join(_SUPPORTED_CLIENT_AUTH)}"
            )
        return value


class WebConfig(_Strict):
    """A web config file: optional TLS and optional basic auth users."""

    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if ":" in user or not user:
                raise ValueError(f"user name {user!r} must be non-empty and contain no ':'")
            if not str(hashed).startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"the password of {user!r} must be a bcrypt hash ($2y$...)")
            if not _valid_hash(hashed):
                raise ValueError(
                    f"the password hash of {user!r} is not a valid bcrypt hash: "
                    "$2y$, a cost of 04 to 31, $ and 53 characters, as htpasswd -nB writes it"
                )
        return users


def _valid_hash(hashed: str) -> bool:
    """Whether ``hashed`` is a bcrypt hash that bcrypt can check, in about a millisecond.

    The form is checked, then the salt is decoded by bcrypt itself at the lowest cost (4):
    a salt whose last character has bits bcrypt does not use set is refused there.
    """
    match = _BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        return False
    try:
        bcrypt.hashpw(b"", f"$2b$04${match.group(2)}".encode())
    except ValueError:
        return False
    return True


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web config file, including that its files load.

    Raises:
        ConfigError: one line naming the file, the field and the problem.
    """
    where = str(path)
    try:
        data = yaml.safe_load(read_text_capped(path, MAX_CONFIG_BYTES)) or {}
    except FileRefused as exc:
        raise ConfigError(str(exc), where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", where=where) from None
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        message = "unknown or unsupported key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        raise ConfigError(message, where=where, field=field or None) from None
    if config.tls_server_config is not None:
        server_context(config.tls_server_config, where)
    return config


def server_context(tls: TlsServerConfig, where: str = "web config") -> ssl.SSLContext:
    """The server-side SSL context for ``tls_server_config``.

    Raises:
        ConfigError: a certificate, key or CA file cannot be loaded, or client CAs are
            given without a client auth type that uses them (as exporter-toolkit refuses).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    _check_file(tls.cert_file, where, "tls_server_config.cert_file")
    _check_file(tls.key_file, where, "tls_server_config.key_file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the certificate and key: {_why(exc)}",
            where=where,
            field="tls_server_config.cert_file",
        ) from None
    context.verify_mode = _SUPPORTED_CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        if context.verify_mode == ssl.CERT_NONE:
            raise ConfigError(
                "client CAs are configured without a client_auth_type that verifies clients",
                where=where,
                field="tls_server_config.client_ca_file",
            )
        _check_file(tls.client_ca_file, where, "tls_server_config.client_ca_file")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the client CA file: {_why(exc)}",
                where=where,
                field="tls_server_config.client_ca_file",
            ) from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError(
            f"{tls.client_auth_type} needs client_ca_file",
            where=where,
            field="tls_server_config.client_auth_type",
        )
    return context


def _check_file(path: Path, where: str, field: str) -> None:
    """Refuse a PEM file OpenSSL would read that is not a regular file of at most 4 MiB.

    Raises:
        ConfigError: naming the file and why (``/dev/zero: is a character device …``).
    """
    try:
        check_capped(path, MAX_PEM_BYTES)
    except FileRefused as exc:
        raise ConfigError(f"{path}: {exc}", where=where, field=field) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return openssl_words(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes, bcrypt off the caller's loop.

    As exporter-toolkit's ``webHandler`` does: one bcrypt check at a time (a flood of
    wrong passwords waits for itself, never for the probing, which runs in another thread,
    nor for a scraper whose password was checked before), successful checks remembered
    (keyed by a SHA-256 of user, hash and password, so the password itself is not kept),
    and an unknown user checked against a dummy hash, so it takes as long as a wrong
    password. The dummy has the cost of the configured hashes (the highest when they
    differ), where exporter-toolkit's is always cost 10.

    Args:
        users: bcrypt hash by user name, as :class:`WebConfig` checked them.
        previous: the checks this one replaces (a reload): what they remembered is kept,
            so that a reload does not make a scraper wait for bcrypt behind a flood of
            wrong passwords. A changed or removed user's entries can never match again:
            the key holds the user's hash.
    """

    def __init__(self, users: dict[str, str], previous: BasicAuth | None = None) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        cost = max((int(hashed[4:6]) for hashed in users.values()), default=10)
        # Any salt of that cost and a hash part no password gives: checked at full cost, never equal.
        self._dummy = bcrypt.gensalt(rounds=cost) + b"." * 31
        self._good: dict[bytes, None] = {}
        self._lock = threading.Lock()
        if previous is not None:
            with previous._lock:
                self._good.update(previous._good)

    @property
    def enabled(self) -> bool:
        """Whether any user is configured."""
        return bool(self._users)

    async def verify(self, header: str | None) -> bool:
        """Whether the ``Authorization`` header value holds valid credentials.

        A remembered success is answered at once; anything else is checked by bcrypt in
        its one thread (:func:`_bcrypt_pool`), this coroutine waiting. Cancelled while it
        waits (the client's time ran out), the check is dropped before it starts.
        """
        credentials = self._credentials(header)
        if credentials is None:
            return not self._users
        if self._remembered(credentials[2]):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_bcrypt_pool(), self._bcrypt, *credentials)

    def _credentials(self, header: str | None) -> tuple[str, bytes, bytes] | None:
        """``(user, password, cache key)`` from a ``Basic`` header; ``None`` when it cannot be valid."""
        if not self._users or not header or not header.lower().startswith("basic "):
            return None
        try:  # the header as the server decoded it (Latin-1): base64 refuses what is not ASCII
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            return None
        user, sep, password = decoded.partition(":")
        secret = password.encode()
        if not sep or len(secret) > MAX_PASSWORD_BYTES:
            return None
        hashed = self._users.get(user, self._dummy)
        key = hashlib.sha256(
            b"\0".join((user.encode().hex().encode(), hashed, secret.hex().encode()))
        ).digest()
        return user, secret, key

    def _remembered(self, key: bytes) -> bool:
        with self._lock:
            return key in self._good

    def _bcrypt(self, user: str, secret: bytes, key: bytes) -> bool:
        """The bcrypt check itself (tens to hundreds of milliseconds, without the GIL).

        After a failed check the thread rests as long as the check took, so that a flood
        of wrong passwords takes at most half of one core from the probing.
        """
        start = time.monotonic()
        hashed = self._users.get(user)
        try:
            ok = bcrypt.checkpw(secret, hashed or self._dummy) and hashed is not None
        except ValueError:  # a NUL byte or the like in the password: a wrong password
            ok = False
        if not ok:
            time.sleep(min(time.monotonic() - start, MAX_REST_SECONDS))
            return False
        with self._lock:
            if len(self._good) >= GOOD_CACHE_SIZE:
                del self._good[next(iter(self._good))]
            self._good[key] = None
        return True


_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def _bcrypt_pool() -> ThreadPoolExecutor:
    """The one thread that runs bcrypt checks (``probe-bcrypt``), started at the first check."""
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-bcrypt"))
        return _pool[0]


def describe(config: Any) -> str:
    """A short description for the start-up log line."""
    parts = []
    if config.tls_server_config is not None:
        parts.append(f"tls ({config.tls_server_config.client_auth_type})")
    if config.basic_auth_users:
        parts.append(f"basic auth ({len(config.basic_auth_users)} users)")
    return ", ".join(parts) or "plain http"
