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

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from probe._files import MAX_CONFIG_BYTES, FileRefused, read_text_capped
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
# A hash to check against for unknown users, so they take as long as known ones.
_DUMMY_HASH = bcrypt.hashpw(b"probe: no such user", bcrypt.gensalt(rounds=10))


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
        return users


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


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return openssl_words(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    Successful checks are remembered (keyed by a SHA-256 of user and password), as
    exporter-toolkit does, so each scrape does not pay bcrypt's deliberate cost.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any user is configured."""
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        """Whether the ``Authorization`` header value holds valid credentials."""
        if not self._users:
            return True
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(key, good) for good in self._good):
                return True
        hashed = self._users.get(user)
        ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                if len(self._good) > 256:
                    self._good.clear()
                self._good.add(key)
        return ok


def describe(config: Any) -> str:
    """A short description for the start-up log line."""
    parts = []
    if config.tls_server_config is not None:
        parts.append(f"tls ({config.tls_server_config.client_auth_type})")
    if config.basic_auth_users:
        parts.append(f"basic auth ({len(config.basic_auth_users)} users)")
    return ", ".join(parts) or "plain http"
