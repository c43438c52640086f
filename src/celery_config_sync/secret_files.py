"""Read a small secret from a file (a mounted Docker/Kubernetes secret): a Redis password, the
API's token. Read with a size cap, so that a path naming /dev/zero or a log file by mistake is
one clear error and not gigabytes read into memory."""

from __future__ import annotations

from pathlib import Path

from .errors import CeleryConfigError

# A password or a token file holds a few lines of a few dozen bytes; 4 KiB leaves room for a
# handful of tokens side by side (rotation) and still refuses anything that is not a secret.
MAX_SECRET_BYTES = 4096


def read_secret(path: str, what: str = "password file", *,
                max_bytes: int = MAX_SECRET_BYTES) -> str:
    """The text of the file ``path`` without its trailing line end; one-line errors for a file
    that cannot be read, is not UTF-8, is empty or is larger than ``max_bytes``."""
    try:
        # Binary and bounded: one byte more than allowed tells "too large" without reading it
        # whole (a device such as /dev/zero never ends).
        with Path(path).open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise CeleryConfigError(f"{what} {path}: cannot read it "
                                f"({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise CeleryConfigError(f"{what} {path}: larger than {max_bytes} bytes, "
                                "not a secret file")
    try:
        text = data.decode("utf-8").rstrip("\r\n")  # a lone \r inside stays as written
    except UnicodeDecodeError:
        raise CeleryConfigError(f"{what} {path}: not UTF-8 text") from None
    if not text:
        raise CeleryConfigError(f"{what} {path}: empty")
    return text
