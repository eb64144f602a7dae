"""Files on messages: what a file is (read from its bytes, never its name), stored once per content, thumbnails without metadata.

A message may carry up to MAX_FILES files. Each becomes a row of ``attachments`` (its message, kind,
media type, the name shown, size, an image's width and height, a content hash); the bytes live once per
hash in ``attachment_blobs``, so the same screenshot posted twice is stored once, on DuckDB and Postgres
alike (``python -m core.move`` carries both tables). The media type comes from the content: Pillow must
open an image, ``filetype`` reads the magic numbers of the rest, and what is neither but valid UTF-8 is
text. Only raster images, audio and PDFs are ever shown inline (``INLINE``); SVG and HTML are text here,
so they are served as downloads and never run. Thumbnails are made by Pillow: the orientation applied,
every metadata block (EXIF with its GPS position, ICC, XMP) left behind, decompression bombs refused.
"""
from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Iterable

import filetype
from PIL import Image, ImageOps, UnidentifiedImageError

from core.context import trim
from core.errors import NotFound, ValidationError
from core.ids import check_id
from core.limits import Limits, RateLimited, wait_words
from core.store import Database, Transaction

MAX_FILES = 10  # files on one message: a screenshot series, not an archive
MAX_FILE_BYTES = 10 * 1024 * 1024  # the default per file (ATTACHMENT_MAX_MB); the chat box is told the same
NAME_MAX = 120  # characters of a file name shown; the rest is cut, the extension kept
MAX_PIXELS = 40_000_000  # width x height an image may declare (a 40-megapixel photo); more is a decompression bomb
THUMB_PIXELS = 480  # the longer side of a thumbnail, enough for a message list column at 2x
THUMB_QUALITY = 80  # JPEG/WebP quality of thumbnails: small, and a photo still looks like one
IMAGES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
INLINE = frozenset(IMAGES.values()) | {"application/pdf"}  # and every audio/*: what a browser may show in the page
TEXT = "text/plain; charset=utf-8"  # HTML, SVG, CSV and code alike: shown as text, served as a download
PARQUET = "application/vnd.apache.parquet"
UNKNOWN = "application/octet-stream"
# Direction controls and other invisible format characters in a name could make "cod.exe" read as "exe.doc".
NOTE_TOKENS = 2000  # of one text file, in what the AI is sent (the context budget then fits the whole request)
NOTE = '[File "{name}" attached to this message, its text between the lines]\n---\n{text}\n---'
HIDDEN = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Upload:
    """One file as the chat box handed it over: its name (anyone's text) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Inspected:
    kind: str  # image | audio | file
    media_type: str
    name: str
    size: int
    sha256: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Attachment:
    id: int
    message_id: int
    channel_id: int
    kind: str
    media_type: str
    name: str
    size: int
    width: int | None
    height: int | None
    sha256: str
    created_at: datetime

    @property
    def inline(self) -> bool:
        """Whether a browser may show it in the page (a raster image, audio, a PDF); anything else downloads."""
        return self.media_type in INLINE or self.media_type.startswith("audio/")


COLUMNS = "id, message_id, channel_id, kind, media_type, name, size, width, height, sha256, created_at"


def clean_file_name(name: Any) -> str:
    """The name a person sees: no folders, no control or direction characters, at most NAME_MAX characters."""
    if not isinstance(name, str):
        name = ""
    name = PureWindowsPath(PurePosixPath(name.replace("\x00", "")).name).name  # "../../x" and "C:\\x" -> "x"
    name = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
                   for ch in unicodedata.normalize("NFC", name) if ch not in HIDDEN and unicodedata.category(ch) != "Cf")
    name = " ".join(name.split()).strip(" .")
    if len(name) > NAME_MAX:
        stem, dot, extension = name.rpartition(".")
        extension = extension if dot and len(extension) <= 10 else ""
        name = name[: NAME_MAX - len(extension) - 2].rstrip() + "…" + (f".{extension}" if extension else "")
    return name or "file"


def inspect(upload: Upload, max_bytes: int = MAX_FILE_BYTES) -> Inspected:
    """What a file is, from its bytes; a ValidationError with a sentence for an empty, oversized or broken one."""
    name = clean_file_name(upload.name)
    data = upload.data
    if not isinstance(data, (bytes, bytearray)):
        raise ValidationError(f"{name}: the file could not be read.")
    if not data:
        raise ValidationError(f"{name} is empty.")
    if len(data) > max_bytes:
        raise ValidationError(f"{name} is too large: {_size_words(len(data))}; the limit is {_size_words(max_bytes)} a file.")
    digest = hashlib.sha256(data).hexdigest()
    image = _image_facts(name, data)
    if image is not None:
        media_type, width, height = image
        return Inspected("image", media_type, name, len(data), digest, width, height)
    guessed = filetype.guess(bytes(data[:8192]))
    if guessed is not None and guessed.mime.startswith("image/"):
        media_type = UNKNOWN  # an image format Pillow does not read here (HEIC, AVIF...): a download
    elif guessed is not None:
        media_type = guessed.mime
    elif data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        media_type = PARQUET
    elif _is_text(data):
        media_type = TEXT
    else:
        media_type = UNKNOWN
    kind = "audio" if media_type.startswith("audio/") else "file"
    return Inspected(kind, media_type, name, len(data), digest)


def _image_facts(name: str, data: bytes) -> tuple[str, int, int] | None:
    """(media type, width, height) of a raster image Pillow can open, None for anything else; a bomb is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                if image.format not in IMAGES:
                    return None
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValidationError(f"{name} is too large an image ({width:,} × {height:,} pixels); "
                                          f"the limit is {MAX_PIXELS // 1_000_000} megapixels.")
                image.verify()  # a truncated or corrupt file fails here, not when someone opens it
                return IMAGES[image.format], width, height
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(f"{name} is too large an image; the limit is {MAX_PIXELS // 1_000_000} megapixels.")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _size_words(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


def check_uploads(uploads: Iterable[Upload], max_bytes: int = MAX_FILE_BYTES) -> list[tuple[Inspected, bytes]]:
    """Every file of one message inspected, or a ValidationError naming the first that cannot go."""
    uploads = list(uploads)
    if len(uploads) > MAX_FILES:
        raise ValidationError(f"A message carries at most {MAX_FILES} files; this one has {len(uploads)}.")
    return [(inspect(upload, max_bytes), bytes(upload.data)) for upload in uploads]


def check_daily(tx: Transaction, limits: Limits | None, user_id: int, now: datetime, incoming: int) -> None:
    """Refuse files that would take a person past ATTACHMENT_MB_PER_DAY (uploads of the last 24 hours)."""
    if limits is None or not limits.attachment_mb_per_day or not incoming:
        return
    allowance = limits.attachment_mb_per_day * 1024 * 1024
    since = now - timedelta(days=1)
    used, first = tx.one(
        "SELECT coalesce(sum(size), 0), min(created_at) FROM attachments WHERE uploaded_by = ? AND created_at > ?",
        [user_id, since],
    )
    if int(used) + incoming > allowance:
        retry_at = (first or now) + timedelta(days=1)
        raise RateLimited(
            f"You have shared {_size_words(int(used))} of files in the last 24 hours, and these "
            f"{_size_words(incoming)} would pass the limit of {limits.attachment_mb_per_day} MB a day. "
            f"Try again in {wait_words((retry_at - now).total_seconds())}.",
            retry_at,
        )


def store(tx: Transaction, message_id: int, channel_id: int, user_id: int | None, files: list[tuple[Inspected, bytes]],
          now: datetime) -> list[int]:
    """Inside the message's transaction: one row per file, the bytes once per content hash."""
    ids = []
    for facts, data in files:
        if tx.one("SELECT 1 FROM attachment_blobs WHERE sha256 = ?", [facts.sha256]) is None:
            tx.execute("INSERT INTO attachment_blobs (sha256, size, data) VALUES (?, ?, ?)", [facts.sha256, facts.size, data])
        (attachment_id,) = tx.one(
            "INSERT INTO attachments (message_id, channel_id, uploaded_by, kind, media_type, name, size, width, height, "
            "sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [message_id, channel_id, user_id, facts.kind, facts.media_type, facts.name, facts.size, facts.width,
             facts.height, facts.sha256, now],
        )
        ids.append(int(attachment_id))
    return ids


def delete_files(tx: Transaction, message_id: int) -> None:
    """Inside a message's delete: its files, and the bytes no other message's file shares."""
    hashes = [row[0] for row in tx.rows("SELECT DISTINCT sha256 FROM attachments WHERE message_id = ?", [message_id])]
    tx.execute("DELETE FROM attachments WHERE message_id = ?", [message_id])
    for sha256 in hashes:
        if tx.one("SELECT 1 FROM attachments WHERE sha256 = ? LIMIT 1", [sha256]) is None:
            tx.execute("DELETE FROM attachment_blobs WHERE sha256 = ?", [sha256])


def get(db: Database, attachment_id: Any) -> Attachment:
    """One attachment's facts (not its bytes), or NotFound."""
    attachment_id = check_id(attachment_id, "File")
    row = db.one(f"SELECT {COLUMNS} FROM attachments WHERE id = ?", [attachment_id])
    if row is None:
        raise NotFound(f"File {attachment_id} not found.")
    return Attachment(*row)


def content(db: Database, attachment: Attachment) -> bytes:
    """The file's bytes."""
    row = db.one("SELECT data FROM attachment_blobs WHERE sha256 = ?", [attachment.sha256])
    if row is None:
        raise NotFound(f"File {attachment.id} is no longer stored.")
    return bytes(row[0])


def of_messages(db: Database, message_ids: Iterable[int]) -> dict[int, list[Attachment]]:
    """Each message's attachments, in the order they were sent."""
    ids = sorted({int(i) for i in message_ids})
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    found: dict[int, list[Attachment]] = {}
    for row in db.rows(f"SELECT {COLUMNS} FROM attachments WHERE message_id IN ({marks}) ORDER BY id", ids):
        attachment = Attachment(*row)
        found.setdefault(attachment.message_id, []).append(attachment)
    return found


def thumbnail(data: bytes, longest: int = THUMB_PIXELS) -> tuple[bytes, str]:
    """A small copy of an image, upright, with no metadata at all: (bytes, media type)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ValidationError("This image is too large to show.")
            image.seek(0)  # the first frame of an animation
            upright = ImageOps.exif_transpose(image)  # the camera's orientation, applied to the pixels
    keeps_alpha = upright.mode in ("RGBA", "LA", "P") and "transparency" in upright.info or upright.mode in ("RGBA", "LA")
    upright = upright.convert("RGBA" if keeps_alpha else "RGB")
    upright.thumbnail((longest, longest))
    out = io.BytesIO()
    # A fresh image from its pixels alone: no EXIF (GPS), ICC, XMP or comments can come along.
    clean = Image.new(upright.mode, upright.size)
    clean.paste(upright)
    if keeps_alpha:
        clean.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png"
    clean.save(out, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return out.getvalue(), "image/jpeg"


def notes_for(db: Database, message_ids: Iterable[int]) -> dict[int, str]:
    """For what the AI is sent: each message's text files as marked notes, each cut to NOTE_TOKENS with a marker."""
    notes: dict[int, list[str]] = {}
    for message_id, found in of_messages(db, message_ids).items():
        for attachment in found:
            if attachment.media_type != TEXT:
                continue  # images, PDFs, tables and voice are not read by the AI yet
            text, _ = trim(content(db, attachment).decode("utf-8", errors="replace"), NOTE_TOKENS)
            notes.setdefault(message_id, []).append(NOTE.format(name=attachment.name, text=text))
    return {message_id: "\n\n".join(parts) for message_id, parts in notes.items()}
