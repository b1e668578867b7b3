"""Reading and writing project files: writes are atomic, reads of damaged files raise one line naming the file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import FmnistError


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Within: an OSError that names no file gets `path`. A full disk's ENOSPC (or EIO) comes from write() or
    close(), which know no file name; the user must still learn which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) to write; it replaces `path` only on success.

    An OSError that names no file (a full disk) names `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix kept: savefig infers the format from it
    try:
        with naming(path):
            yield tmp
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically: readers, and a kill, see the old or the whole new file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_text(path: str | Path, error: type[FmnistError], what: str) -> str:
    """The file's text; `error` naming the file when it cannot be read (missing, a directory, not UTF-8)."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not a text file") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None


def read_json(path: str | Path, error: type[FmnistError], what: str) -> Any:
    """Parsed JSON; `error` with the file, line and problem when it is damaged."""
    return _parsed(path, error, what, "JSON", json.loads, json.JSONDecodeError, lambda e: f"{e.msg}, line {e.lineno}")


def read_yaml(path: str | Path, error: type[FmnistError], what: str) -> Any:
    """Parsed YAML; `error` with the file and problem when it is damaged."""
    import yaml

    return _parsed(path, error, what, "YAML", yaml.safe_load, yaml.YAMLError, lambda e: str(e).splitlines()[0])


def _parsed(path, error, what, kind: str, parse, damaged: type[Exception], describe) -> Any:
    text = read_text(path, error, what)
    try:
        return parse(text)
    except damaged as e:
        raise error(f"{path}: {what} is not valid {kind} ({describe(e)})") from None


def read_csv(path: str | Path, error: type[FmnistError], what: str, columns: tuple[str, ...] = ()):
    """A CSV as a DataFrame with these `columns` at least; `error` naming the file and what is wrong."""
    import pandas as pd

    read_text(path, error, what)  # missing, unreadable, binary: one line
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise error(f"{path}: {what} is not a valid CSV table ({str(e).splitlines()[0]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise error(f"{path}: {what} lacks the column(s) {', '.join(missing)} (damaged or not such a file)")
    return table
