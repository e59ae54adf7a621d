"""What the commands share: settings, a producer for one-off publishing, checked arguments.

Every argument is checked while the command line is parsed, before any work, and by the
rule the consumers apply: a field's own pydantic type, or the whole model where the rule
spans fields. A refused value ends the command with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from sendrail.bus.clients import ensure_topics, make_producer
from sendrail.errors import ConfigurationError
from sendrail.settings import Settings
from sendrail.validation import EmailAddress, Identifier

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction


@contextlib.asynccontextmanager
async def producer_for(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka, client_id="sendrail-cli")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def reasons(error: ValidationError, *, with_fields: bool = True) -> str:
    """pydantic's messages on one line, each after the field it is about. Only the messages:
    the input may hold (sealed) secrets, and it is the user's own anyway."""
    parts = []
    for detail in error.errors():
        message = detail["msg"].removeprefix("Value error, ")
        where = ".".join(str(part) for part in detail["loc"])
        parts.append(f"{where}: {message}" if with_fields and where else message)
    return "; ".join(parts)


def _refused(text: str, reason: str) -> argparse.ArgumentTypeError:
    shown = repr(text)
    return argparse.ArgumentTypeError(reason if shown in reason else f"{reason} (got {shown})")


def checked(annotation: Any, *, expected: str | None = None) -> Callable[[str], Any]:
    """An argparse `type` that validates with `annotation`, as pydantic does in the models;
    `expected` says in words what a valid value looks like, where pydantic's message would
    be a regular expression."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as error:
            raise _refused(text, f"expected {expected}" if expected else reasons(error)) from None

    return parse


def field_of(model: type[BaseModel], name: str, *, expected: str | None = None) -> Callable[[str], Any]:
    """`checked` with the type of one field of `model`: the CLI applies the consumers' rule."""
    field = model.model_fields[name]
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return checked(annotation, expected=expected)


def checked_by_model(model: type[BaseModel], name: str, context: Mapping[str, Any]) -> Callable[[str], Any]:
    """An argparse `type` for a flag whose rule is the whole model's (a validator that reads
    several fields): `model` is validated with the flag's value as field `name` and valid
    stand-ins from `context` for the rest, so only this value is judged."""

    def parse(text: str) -> Any:
        try:
            record = model.model_validate({**context, name: text})
        except ValidationError as error:
            raise _refused(text, reasons(error, with_fields=False)) from None
        return getattr(record, name)

    return parse


ID = checked(Identifier, expected="an id: 1 to 128 letters, digits and . _ : @ -, starting "
                                  "with a letter or a digit")
"""Tenant, user, connection, campaign and template ids, as the events take them."""
ADDRESS = checked(EmailAddress)
"""An address (addr-spec), normalised as the events normalise it."""


def number(kind: type[int] | type[float], least: float, most: float) -> Callable[[str], Any]:
    """A whole or real number from `least` to `most`; never NaN or infinite."""
    if kind is int:
        return checked(Annotated[int, Field(ge=least, le=most)])
    return checked(Annotated[float, Field(ge=least, le=most, allow_inf_nan=False)])


def one_line(most_chars: int) -> Callable[[str], str]:
    """Free text shown in listings: one line of at most `most_chars` characters."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("expected some text, got nothing")
        if any(not char.isprintable() for char in text):
            raise _refused(text, "expected one line of printable text")
        if len(text) > most_chars:
            raise argparse.ArgumentTypeError(f"at most {most_chars} characters, not {len(text)}")
        return text

    return parse


def existing_file(text: str) -> str:
    """A regular file that can be read, named as given; its size is checked when it is read."""
    path = Path(text)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"{text}: not a regular file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable")
    return text


def output_folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but may not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    return path


def output_file(text: str) -> Path:
    """A file to write: it may exist, but may not be a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder")
    return path


def read_bounded(path: Path, most_bytes: int, what: str) -> bytes:
    """The whole file, refused before it is read when it is larger than `most_bytes`."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > most_bytes:
                raise ConfigurationError(f"{path}: {size:,} bytes; {what} is at most {most_bytes:,}")
            data = file.read(most_bytes + 1)  # the size may have changed since
    except OSError as error:
        raise ConfigurationError(f"{path}: {error.strerror}") from None
    if len(data) > most_bytes:
        raise ConfigurationError(f"{path}: more than {most_bytes:,} bytes; {what} is at most {most_bytes:,}")
    return data
