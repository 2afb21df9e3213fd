"""Model and checkpoint files: a magic line, a JSON header (settings, payload checksum), then equinox leaves.

Layout: b"DIFFCLI-EQX\n" | 8-byte little-endian header length | JSON header | eqx.tree_serialise_leaves payload.
The header carries the hyperparameters, so a reader rebuilds the skeleton before reading the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import equinox as eqx

from diffcli import __version__
from diffcli.errors import DiffcliError
from diffcli.io.atomic import atomic_path

MAGIC = b"DIFFCLI-EQX\n"
FORMAT_VERSION = 1
_MAX_HEADER = 1 << 24


def write_tree(path, header: dict, tree) -> None:
    """Serialise `tree` with its header atomically (a crash never leaves a half-written file under `path`)."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    payload = buf.getvalue()
    header = {**header, "format_version": FORMAT_VERSION, "diffcli_version": __version__,
              "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    head = json.dumps(header, sort_keys=True).encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC + len(head).to_bytes(8, "little") + head + payload)


def read_header(path, kind: str) -> tuple[dict, bytes]:
    """The validated header and payload of a `kind` file ("model" or "checkpoint"); any defect is one sentence."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DiffcliError(f"{kind} file '{path}' does not exist.")
    with open(path, "rb") as f:
        blob = f.read()
    what = f"'{path}' is not a usable diffcli {kind} file"
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 8:
        raise DiffcliError(f"{what}: it was not written by diffcli train.")
    size = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    try:
        if size > _MAX_HEADER:
            raise ValueError
        header = json.loads(blob[start : start + size])
    except ValueError:
        raise DiffcliError(f"{what}: its header is damaged.") from None
    payload = blob[start + size :]
    if header.get("kind") != kind:
        raise DiffcliError(f"{what}: it holds a {header.get('kind', 'unknown')} instead.")
    if header.get("format_version") != FORMAT_VERSION:
        raise DiffcliError(f"{what}: format version {header.get('format_version')} is not {FORMAT_VERSION}.")
    if (len(payload) != header.get("payload_bytes")
            or hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")):
        raise DiffcliError(f"{what}: it is truncated or corrupted (checksum mismatch).")
    return header, payload


def read_tree(payload: bytes, like, path) -> object:
    """Fill the skeleton `like` with the stored leaves; a shape mismatch is one sentence."""
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as exc:  # equinox raises RuntimeError/ValueError/struct errors on mismatched leaves
        raise DiffcliError(f"'{path}' does not match the network its header describes "
                           f"({type(exc).__name__}).") from None
