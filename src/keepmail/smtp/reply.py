"""SMTP replies with enhanced status codes (RFC 5321 4.2, RFC 3463, RFC 2034)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class cached(Generic[T]):
    """functools.cached_property without its lock (Python 3.11 takes one per first
    read, which costs more than most of what is cached here). Fine on the event loop;
    a race between threads would at worst compute the value twice."""

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str
    close: bool = False  # close the connection after sending

    def render(self, *, enhanced: bool = True) -> bytes:
        prefix = f"{self.enhanced} " if enhanced and self.enhanced else ""
        if "\n" not in self.text:
            return f"{self.code} {prefix}{self.text}\r\n".encode("utf-8", "replace")
        lines = self.text.split("\n")
        out = [f"{self.code}-{prefix}{line}" for line in lines[:-1]]
        out.append(f"{self.code} {prefix}{lines[-1]}")
        return ("\r\n".join(out) + "\r\n").encode("utf-8", "replace")

    # Replies are mostly module constants sent thousands of times a second: their
    # wire form and their recorder text are computed once per Reply object.
    @cached
    def wire(self) -> bytes:
        return self.render()

    @cached
    def logged(self) -> str:
        """One line for the flight recorder."""
        return str(self).replace("\n", " | ")

    @property
    def positive(self) -> bool:
        return self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("  ", " ")


def r(code: int, enhanced: str, text: str, close: bool = False) -> Reply:
    return Reply(code, enhanced, text, close)


OK = r(250, "2.0.0", "OK")
SENDER_OK = r(250, "2.1.0", "Sender OK")
RCPT_OK = r(250, "2.1.5", "Recipient OK")
BAD_SEQUENCE = r(503, "5.5.1", "Bad sequence of commands")
SYNTAX = r(501, "5.5.4", "Syntax error in parameters or arguments")
UNKNOWN_COMMAND = r(500, "5.5.2", "Command not recognized")
LINE_TOO_LONG = r(500, "5.5.6", "Line too long")
TOO_MANY_RCPTS = r(452, "4.5.3", "Too many recipients")
AUTH_REQUIRED = r(530, "5.7.0", "Authentication required")
ENCRYPTION_REQUIRED = r(530, "5.7.0", "Must issue a STARTTLS command first")
SHUTTING_DOWN = r(421, "4.3.2", "Server shutting down, try again later", close=True)
