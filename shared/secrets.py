"""Encryption of credentials at rest: refresh tokens and SMTP passwords travel as Fernet tokens."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from sendrail.errors import ConfigurationError
from sendrail.settings import SecretSettings


class SecretBox:
    """Seals and opens secrets with the deployment's key; the key never leaves this object."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigurationError(
                "the secret key is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    @classmethod
    def from_settings(cls, settings: SecretSettings) -> SecretBox:
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().encode())
        if settings.secret_key_file is not None:
            try:
                return cls(settings.secret_key_file.read_bytes().strip())
            except OSError as error:
                raise ConfigurationError(f"cannot read the secret key file: {error}") from None
        raise ConfigurationError(
            "no secret key: set SENDRAIL_SECRET_KEY (a Fernet key, "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            " or SENDRAIL_SECRET_KEY_FILE"
        )

    @staticmethod
    def generate_key() -> bytes:
        return Fernet.generate_key()

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with this key (was it sealed with another?)"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"
