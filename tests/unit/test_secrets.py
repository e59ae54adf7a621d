"""Credentials at rest: sealed with the deployment's key, useless without it, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from sendrail.errors import ConfigurationError
from sendrail.secrets import SecretBox
from sendrail.settings import SecretSettings

SECRETS = ["1//0gRefreshTokenOfGoogle-abc_DEF", "pässwörd with spaces ✓", "x", ""]


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDRAIL_SECRET_KEY", raising=False)
    monkeypatch.delenv("SENDRAIL_SECRET_KEY_FILE", raising=False)


@pytest.mark.parametrize("secret", SECRETS)
def test_seal_then_open_gives_the_secret_back(secret: str) -> None:
    box = SecretBox(SecretBox.generate_key())
    sealed = box.seal(secret)
    assert box.open(sealed) == secret


@pytest.mark.parametrize("secret", [s for s in SECRETS if len(s) > 1])
def test_the_sealed_text_does_not_reveal_the_secret(secret: str) -> None:
    sealed = SecretBox(SecretBox.generate_key()).seal(secret)
    assert secret not in sealed
    assert sealed.isascii()


def test_sealing_twice_gives_different_texts() -> None:
    box = SecretBox(SecretBox.generate_key())
    assert box.seal("token") != box.seal("token")


def test_another_key_cannot_open_it() -> None:
    sealed = SecretBox(SecretBox.generate_key()).seal("token")
    with pytest.raises(ConfigurationError, match="another"):
        SecretBox(SecretBox.generate_key()).open(sealed)


@pytest.mark.parametrize("sealed", ["", "not a token", "gAAAAA", "ünïcode"])
def test_garbage_is_a_configuration_error(sealed: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretBox(SecretBox.generate_key()).open(sealed)


def test_a_tampered_token_is_refused() -> None:
    box = SecretBox(SecretBox.generate_key())
    sealed = box.seal("token")
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(ConfigurationError):
        box.open(tampered)


def test_repr_hides_the_key() -> None:
    key = SecretBox.generate_key()
    box = SecretBox(key)
    for text in (repr(box), str(box), f"{box!r}"):
        assert key.decode() not in text
        assert "hidden" in text


def test_from_settings_with_a_key() -> None:
    key = SecretBox.generate_key()
    box = SecretBox.from_settings(SecretSettings(secret_key=SecretStr(key.decode())))
    assert SecretBox(key).open(box.seal("token")) == "token"


def test_from_settings_with_a_key_file(tmp_path: Path) -> None:
    key = SecretBox.generate_key()
    key_file = tmp_path / "sendrail.key"
    key_file.write_bytes(key + b"\n")  # as `echo` or an editor leaves it
    box = SecretBox.from_settings(SecretSettings(secret_key_file=key_file))
    assert SecretBox(key).open(box.seal("token")) == "token"


def test_from_settings_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = SecretBox.generate_key()
    monkeypatch.setenv("SENDRAIL_SECRET_KEY", key.decode())
    assert SecretBox(key).open(SecretBox.from_settings(SecretSettings()).seal("t")) == "t"


def test_from_settings_without_a_key_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError) as raised:
        SecretBox.from_settings(SecretSettings())
    message = str(raised.value)
    assert "SENDRAIL_SECRET_KEY" in message
    assert "SENDRAIL_SECRET_KEY_FILE" in message
    assert "Fernet.generate_key()" in message


@pytest.mark.parametrize("bad_key", ["not-a-fernet-key", "c2hvcnQ=", ""])
def test_from_settings_with_a_malformed_key_is_a_configuration_error(
    bad_key: str, tmp_path: Path
) -> None:
    """A person must fix it, so it is reported like any other bad setting (the CLI prints
    SendrailErrors without a traceback), and the message never repeats the key."""
    key_file = tmp_path / "sendrail.key"
    key_file.write_text(bad_key)
    for settings in (SecretSettings(secret_key=SecretStr(bad_key)),
                     SecretSettings(secret_key_file=key_file)):
        with pytest.raises(ConfigurationError) as raised:
            SecretBox.from_settings(settings)
        assert not bad_key or bad_key not in str(raised.value)


def test_from_settings_with_a_missing_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    with pytest.raises(ConfigurationError, match=r"nowhere\.key"):
        SecretBox.from_settings(SecretSettings(secret_key_file=missing))
