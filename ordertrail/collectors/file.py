"""File source: JSONL or CSV files matched by a glob, plain or gzip, read resumably.

Every physical line of a file ends up stored, quarantined with its reason, counted (filtered,
blank, a CSV header) or pending — never lost silently, never stored twice. The rules:

- **Checkpoints.** Each file's checkpoint holds the byte offset and line number reached, and a
  fingerprint: a hash of the file's first 4 KiB and of the 4 KiB before the offset (plain
  files), or of the compressed file's first and last 4 KiB plus a CRC-32 of the decompressed
  bytes verified so far (gzip), and its inode. A file whose size is below the offset, whose
  fingerprint changed (a file truncated and refilled, or a new file that reuses the inode) or
  whose inode changed (a new copy) is read again from the start: stored events are idempotent.
  A change only *between* the two windows goes unnoticed: files are taken to be appended to,
  not rewritten in the middle (``ingest --from-start`` reads such a file again).
- **Unterminated last lines.** A last line without a newline may still be being written. A
  JSONL line that already parses as a JSON object is taken (JSON is self-delimiting); anything
  else — any CSV line, which nothing delimits — waits (``pending``) until the file has
  *settled*: unchanged in size and modification time since the previous ingest, or not
  modified for :data:`SETTLE_SECONDS`. Then it is quarantined ("possibly torn") without being
  consumed, and the checkpoint remembers its quarantine row: should the line be completed
  after all, that row is withdrawn in the transaction that stores the completed line.
- **CSV framing** (quote ``"``, doubled quotes inside quoted fields, ``strict``): a record may
  span lines inside a quoted field, at most :data:`CSV_MAX_RECORD_LINES` lines and
  :data:`CSV_MAX_RECORD_BYTES` bytes, a field at most ``csv.field_size_limit()`` (128 KiB).
  A record that breaks these rules or does not frame (a stray quote) sends only its *first*
  line to quarantine; framing starts again on the next line, so one stray quote cannot swallow
  the rows after it. A multi-line record is also rejected so when it has the wrong number of
  fields, or when a line inside its quoted field is itself a whole row (no quote, the header's
  number of fields): the sign of a quote that swallowed rows. A quote still open where the
  data ends waits like an unterminated line; once the file has settled its first line goes to
  quarantine and the lines after it are framed again. Lines are decoded as strict UTF-8: an
  invalid line is quarantined, never decoded with U+FFFD (two ids must not merge into one).
  Blank lines are counted, also before the header; a header that cannot be read sends every
  line of the file to quarantine.
- **gzip.** Decompressed bytes are trustworthy only once their member's CRC and length are
  verified. A first pass checks every member (constant memory, no mapping); the second reads
  records only up to the end of the last verified member. A CRC or stream error, or garbage
  after a member, stops there: the rest of the file goes to quarantine as one record with the
  reason, and no byte of it is stored. A file that ends inside a member is pending until it
  settles, like a last line. Progress is counted in compressed bytes.
- **Unreadable files** (no permission, a dangling symlink, a file gone between the glob and
  the open, a FIFO, a read error) are skipped with a warning and listed in
  :attr:`FileSource.unreadable`; everything else is ingested, and the source's watermark does
  not advance. A directory a glob matches is not a file of the source.
- A line longer than :data:`MAX_LINE_BYTES` is quarantined with its first bytes and read past
  without being held in memory.
- **CR line endings** (classic Mac OS, Excel's "CSV (Macintosh)"): a settled CSV file read from
  its start that holds no LF at all but a CR is read with CR as its line ending, and its
  checkpoint remembers it; should LF appear in it later, the file is read again from the start
  with LF. Elsewhere a line whose CR characters look like line ends is quarantined with a reason
  that starts "CR line endings:" (JSONL lines must end with LF).
- **Reading again** (``from_start``, or a file under ``--replace``): quarantine rows an earlier
  read left for the same records give way to what the records map to now.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import os
import stat
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.schemas.config import SourceConfig
from ordertrail.schemas.event import QuarantineRecord
from ordertrail.store.writer import Checkpoint, ReplaceMark

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
GZIP_IN_CHUNK = 256 << 10
FINGERPRINT_BYTES = 4096
MAX_LINE_BYTES = 16 << 20  # a longer physical line is quarantined with a preview
PREVIEW_BYTES = 4096
CSV_MAX_RECORD_LINES = 100  # physical lines one CSV record may span
CSV_MAX_RECORD_BYTES = 1 << 20
SETTLE_SECONDS = 60.0  # a file not modified for this long is not being written any more
SNIFF_CHUNK = 64 << 10  # read looking for line ends (CR-only CSV files)

UNTERMINATED = "unterminated last line (no newline, and the file stopped growing)"

# kinds of physical lines
_LINE, _OPEN, _LONG, _LONG_OPEN = 0, 1, 2, 3  # _OPEN: the last line, without a newline


_Special = tuple[bytes, int, int]  # a line that is not an ordinary one: (bytes, taken, kind)


def line_runs(read: Callable[[int], bytes], sep: bytes = b"\n") -> Iterator[list[bytes] | _Special]:
    """Physical lines of a byte stream: runs of ordinary lines (each without its newline), and
    special lines as (bytes, bytes taken, kind). A line longer than MAX_LINE_BYTES comes as its
    first PREVIEW_BYTES (kind _LONG) and is read past without being held; the last line, when
    it has no newline, comes as _OPEN (or _LONG_OPEN). ``sep`` is the newline: LF, or CR for a
    file with CR line endings."""
    tail = b""
    long_size = -1  # >= 0: inside an over-long line, its bytes so far
    preview = b""
    while True:
        chunk = read(READ_CHUNK)
        if not chunk:
            break
        if long_size >= 0:
            i = chunk.find(sep)
            if i < 0:
                long_size += len(chunk)
                continue
            yield preview, long_size + i + 1, _LONG
            long_size = -1
            chunk = chunk[i + 1 :]
        if tail:
            chunk = tail + chunk
        parts = chunk.split(sep)
        tail = parts.pop()
        if len(chunk) > MAX_LINE_BYTES:  # only a long line makes a chunk this big
            for p in parts:
                if len(p) > MAX_LINE_BYTES:
                    yield p[:PREVIEW_BYTES], len(p) + 1, _LONG
                else:
                    yield [p]
        elif parts:
            yield parts
        if len(tail) > MAX_LINE_BYTES:
            preview, long_size, tail = tail[:PREVIEW_BYTES], len(tail), b""
    if long_size >= 0:
        yield preview, long_size, _LONG_OPEN
    elif tail:
        yield tail, len(tail), _OPEN


def split_lines(read: Callable[[int], bytes], sep: bytes = b"\n") -> Iterator[_Special]:
    """Every physical line as (bytes without the newline, bytes taken, kind): see line_runs."""
    for run in line_runs(read, sep):
        if isinstance(run, list):
            for p in run:
                yield p, len(p) + 1, _LINE
        else:
            yield run


def _fp(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _fp_at(fd: int, start: int, n: int) -> str:
    return _fp(os.pread(fd, n, start) if n > 0 else b"")


def quarantine_digest(raw: bytes) -> str:
    """The digest of the quarantine row a record with these raw bytes gets (see Mapper)."""
    return QuarantineRecord("", "", "", raw.decode("utf-8", "replace")).digest


# -- gzip -------------------------------------------------------------------------------------


class GzipDataError(OSError):
    """A gzip file's data is corrupt (CRC, length, stream or header error)."""


class _GzipTruncated(Exception):
    """The file ends inside a gzip member."""


_ZLIB_REASONS = {
    "incorrect data check": "CRC check failed",
    "incorrect length check": "length check failed",
    "incorrect header check": "not gzip data",
}


def _inflate(fh: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Decompressed data of a gzip file as (data, member_end): when member_end is True, every
    byte yielded so far belongs to members whose CRC and length zlib has verified. Zero padding
    between members is skipped (as gzip does). Raises GzipDataError or _GzipTruncated."""
    d: Any = None
    buf = b""
    eof = False
    members = 0
    while True:
        if not buf and not eof:
            buf = fh.read(GZIP_IN_CHUNK)
            eof = not buf
        if d is None:
            if members:
                buf = buf.lstrip(b"\0")
            if not buf:
                if eof:
                    return
                continue
            d = zlib.decompressobj(31)
        if not buf and eof:
            raise _GzipTruncated
        try:
            out = d.decompress(buf, READ_CHUNK)
        except zlib.error as e:
            msg = str(e).split(": ", 1)[-1]
            where = fh.tell() - len(buf)
            what = _ZLIB_REASONS.get(msg, msg)
            if members and what == "not gzip data":
                what = "data after the last gzip member is not gzip"
            raise GzipDataError(
                f"{what} (gzip member {members + 1}, near byte {where:,})"
            ) from None
        if d.eof:
            buf = d.unused_data
            d = None
            members += 1
            yield out, True
        else:
            buf = d.unconsumed_tail
            if out:
                yield out, False


@dataclass(slots=True)
class _GzipScan:
    verified: int = 0  # decompressed bytes in members whose trailer verified
    vcrc: int = 0  # CRC-32 of those bytes
    total: int = 0  # decompressed bytes decoded, verified or not
    crc_at: int | None = None  # CRC-32 of the decompressed bytes before the asked position
    error: str | None = None
    truncated: bool = False


def _scan_gzip(fh: IO[bytes], at: int) -> _GzipScan:
    """First pass over a gzip file: verify every member, without keeping any data."""
    s = _GzipScan(crc_at=0 if at == 0 else None)
    crc = pos = 0
    try:
        for data, end in _inflate(fh):
            if s.crc_at is None and pos + len(data) >= at:
                s.crc_at = zlib.crc32(data[: at - pos], crc)
            crc = zlib.crc32(data, crc)
            pos += len(data)
            if end:
                s.verified, s.vcrc = pos, crc
    except GzipDataError as e:
        s.error = str(e)
    except _GzipTruncated:
        s.truncated = True
    s.total = pos
    return s


class _PlainStream:
    def __init__(self, fh: IO[bytes]):
        self.fh = fh

    def seek(self, pos: int) -> None:
        self.fh.seek(pos)

    def read(self, n: int) -> bytes:
        return self.fh.read(n)

    def progress(self) -> int:
        return self.fh.tell()


class _GzipStream:
    """Decompressed bytes of a gzip file up to ``limit`` (the verified part)."""

    def __init__(self, fh: IO[bytes], limit: int):
        self.fh, self.limit = fh, limit
        self._start()

    def _start(self) -> None:
        self.fh.seek(0)
        self._it = _inflate(self.fh)
        self._buf = b""
        self.pos = 0

    def seek(self, pos: int) -> None:
        if pos < self.pos:
            self._start()
        while self.pos < pos:
            if not self.read(min(READ_CHUNK, pos - self.pos)):
                break

    def read(self, n: int) -> bytes:
        room = self.limit - self.pos
        if room <= 0:
            return b""
        while not self._buf:
            try:
                self._buf = next(self._it)[0]
            except (StopIteration, _GzipTruncated):
                return b""
        out = self._buf[: min(n, room)]
        self._buf = self._buf[len(out) :]
        self.pos += len(out)
        return out

    def progress(self) -> int:
        return self.fh.tell()


Stream = _PlainStream | _GzipStream


# -- state ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FileState:
    """One file as this ingest found it, and how far it has been read."""

    path: str
    size: int
    mtime_us: int
    inode: int
    offset: int = 0
    line: int = 0
    filtered: int = 0  # records of this file the source's ``where`` filtered, before this run
    gz: bool = False
    open_line: bool = False  # the last line taken had no newline (JSONL): what follows ends it
    tail: dict[str, Any] | None = None  # a settled unterminated end, quarantined, not consumed
    replace: ReplaceMark | None = None  # --replace in progress for this file
    settled: bool = False
    done: bool = False
    cr: bool = False  # CR line endings (a CSV file holding no LF)
    # gzip: the compressed file's fingerprints, and the verified decompressed prefix
    head: str = ""
    near: str = ""
    vlen: int = 0
    vcrc: int = 0
    saved: dict[str, Any] = field(default_factory=dict)  # the last position checkpointed

    def position(self, fd: int | None) -> dict[str, Any]:
        """The checkpoint position; ``fd`` (a plain file's) gives the fingerprints."""
        pos: dict[str, Any] = {
            "offset": self.offset,
            "line": self.line,
            "size": self.size,
            "mtime": self.mtime_us,
            "inode": self.inode,
            "done": self.done,
            "filtered": self.filtered,
        }
        if self.gz:
            pos.update(head=self.head, near=self.near, vlen=self.vlen, vcrc=self.vcrc)
        elif fd is not None:
            n = min(FINGERPRINT_BYTES, self.offset)
            pos.update(head=_fp_at(fd, 0, n), near=_fp_at(fd, self.offset - n, n))
        if self.cr:
            pos["eol"] = "cr"
        if self.open_line:
            pos["open"] = True
        if self.tail:
            pos["tail"] = self.tail
        if self.replace:
            pos["replace"] = [self.replace.seq, self.replace.at]
        return pos


def _mark(pos: dict[str, Any]) -> ReplaceMark | None:
    m = pos.get("replace")
    return ReplaceMark(int(m[0]), int(m[1])) if isinstance(m, list) and len(m) == 2 else None


class _Out:
    """Collects one file's records into batches, each with the file's checkpoint."""

    def __init__(self, src: FileSource, fs: FileState, stream: Stream, fd: int):
        self.src, self.fs, self.stream, self.fd = src, fs, stream, fd
        self.records: list[RawRecord] = []
        self.withdraw: list[tuple[str, str]] = []
        # progress: bytes of the file from where this read starts (gzip: compressed, from 0)
        self._seen = fs.offset if isinstance(stream, _PlainStream) else 0

    def batch(self) -> RawBatch:
        fs, src = self.fs, self.src
        now = self.stream.progress()
        progress, self._seen = max(0, now - self._seen), now
        fs.saved = fs.position(self.fd if self.fd >= 0 else None)
        b = RawBatch(
            self.records,
            [Checkpoint(src.name, fs.path, dict(fs.saved))],  # the runner adds to its count
            progress,
            withdraw=self.withdraw,
            reread=src.from_start or fs.replace is not None,
            replace=fs.replace,
        )
        self.records, self.withdraw = [], []
        return b


# -- CSV framing ------------------------------------------------------------------------------

_Phys = tuple[int, int, bytes, int, int]  # line number, offset, bytes, bytes taken, kind
F_OK, F_BAD, F_BLANK, F_TORN, F_OPEN = range(5)


class _TooBig(Exception):
    pass


class _Feeder:
    """Feeds one record's physical lines to ``csv.reader``, within the record bounds."""

    def __init__(self, framer: _CsvFramer):
        self.framer = framer
        self.taken: list[_Phys] = []
        self.size = 0
        self.eof = False

    def start(self) -> None:
        self.taken, self.size, self.eof = [], 0, False

    def __iter__(self) -> _Feeder:
        return self

    def __next__(self) -> str:
        if self.taken and (
            len(self.taken) >= CSV_MAX_RECORD_LINES or self.size >= CSV_MAX_RECORD_BYTES
        ):
            raise _TooBig
        p = self.framer.pull()
        if p is None:
            self.eof = True
            raise StopIteration
        self.taken.append(p)
        self.size += p[3]
        if p[4] == _LONG or p[4] == _LONG_OPEN:
            raise _TooBig
        text = p[2].decode("utf-8")  # UnicodeDecodeError goes up through csv.reader
        return text + "\n" if p[4] == _LINE else text


class _CsvFramer:
    """Frames CSV records out of physical lines; see the module docstring for the rules."""

    def __init__(self, lines: Iterator[tuple[bytes, int, int]], delimiter: str, off: int, no: int):
        self._src = lines
        self._back: deque[_Phys] = deque()
        self.next_off, self.next_no = off, no + 1
        self.delim = delimiter
        self.width = 0  # the header's number of fields, once known
        self._blank = b" \t\r\f\v".replace(delimiter.encode("utf-8"), b"")
        self._feeder = _Feeder(self)
        self._reader = csv.reader(self._feeder, delimiter=delimiter, strict=True)
        self._limit = csv.field_size_limit()

    def pull(self) -> _Phys | None:
        if self._back:
            return self._back.popleft()
        item = next(self._src, None)
        if item is None:
            return None
        p = (self.next_no, self.next_off, *item)
        self.next_no += 1
        self.next_off += item[1]
        return p

    def push_back(self, lines: list[_Phys]) -> None:
        self._back.extendleft(reversed(lines))

    def next(self) -> tuple[int, list[_Phys], Any] | None:
        """The next record: (F_OK, lines, fields), (F_BAD, lines, reason), (F_BLANK, [line],
        None), (F_TORN, lines, fields or reason): framed but its last line has no newline, or
        (F_OPEN, lines, reason): a quoted field still open at the end of the data."""
        first = self.pull()
        if first is None:
            return None
        kind = first[4]
        if kind == _LONG:
            return F_BAD, [first], _cr_note(first[2], "csv") + _too_long(first[3])
        if kind == _LONG_OPEN:
            return F_TORN, [first], _cr_note(first[2], "csv") + _too_long(first[3])
        data = first[2]
        if not data.strip(self._blank):
            return (F_BLANK if kind == _LINE else F_TORN), [first], None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"invalid UTF-8 (byte {e.start} of the line)"
            return (F_BAD if kind == _LINE else F_TORN), [first], reason
        if text.endswith("\r"):
            text = text[:-1]
        if '"' not in text and "\r" not in text:  # the common case: no quoting at all
            fields = text.split(self.delim)
            if len(text) > self._limit and max(map(len, fields)) > self._limit:
                return (
                    F_BAD,
                    [first],
                    f"malformed CSV: field larger than field limit ({self._limit})",
                )
            return (F_OK if kind == _LINE else F_TORN), [first], fields
        return self._slow(first)

    def _slow(self, first: _Phys) -> tuple[int, list[_Phys], Any]:
        self._back.appendleft(first)
        fd = self._feeder
        fd.start()
        try:
            row = next(self._reader)
        except (csv.Error, UnicodeDecodeError, _TooBig) as e:
            lines = fd.taken
            if isinstance(e, UnicodeDecodeError):
                n = lines[-1][0]
                reason = (
                    f"invalid UTF-8 (byte {e.start} of the line)"
                    if n == lines[0][0]
                    else f"quoted field not closed (line {n}, which it runs into, is not UTF-8)"
                )
            elif isinstance(e, _TooBig):
                reason = (
                    f"quoted field does not close within {CSV_MAX_RECORD_LINES} lines or "
                    f"{CSV_MAX_RECORD_BYTES:,} bytes"
                )
            elif "new-line character seen in unquoted field" in str(e):  # a bare CR
                text = b"\n".join(p[2].rstrip(b"\r") for p in lines) + b"\n"  # CRLF's CRs out
                reason = _cr_note(text, "csv").rstrip("; ") or f"malformed CSV: {e}"
            else:
                reason = f"malformed CSV: {e}"
            if fd.eof:
                return F_OPEN, lines, "quoted field not closed by the end of the file"
            if lines[-1][4] == _OPEN:  # the unterminated last line may still change
                return F_TORN, lines, reason
            self.push_back(lines[1:])  # only the first line is the record that went wrong
            return F_BAD, lines[:1], reason
        lines = fd.taken
        if lines[-1][4] == _OPEN:
            return F_TORN, lines, row
        if len(lines) > 1 and self.width and (len(row) != self.width or self._swallows(lines)):
            self.push_back(lines[1:])
            return (
                F_BAD,
                lines[:1],
                (
                    "quoted field does not make one record (a stray quote? it spans lines "
                    f"{lines[0][0]}-{lines[-1][0]})"
                ),
            )
        return F_OK, lines, row

    def _swallows(self, lines: list[_Phys]) -> bool:
        """Whether a line inside the record's quoted field looks like a row of its own."""
        if self.width < 2:
            return False
        for p in lines[1:-1]:
            text = p[2].decode("utf-8").rstrip("\r")
            if '"' not in text and text.count(self.delim) == self.width - 1:
                return True
        return False


def _raw(lines: list[_Phys]) -> bytes:
    """A record's raw bytes: its lines without the last newline (as the event id hashes them)."""
    if len(lines) == 1:
        return lines[0][2].rstrip(b"\r\n")
    return b"\n".join(p[2] for p in lines).rstrip(b"\r\n")


# -- the source -------------------------------------------------------------------------------


class FileSource:
    """Reads the files of one ``kind = "file"`` source."""

    def __init__(self, config: SourceConfig, batch_size: int = 20_000, *, from_start: bool = False):
        if config.kind != "file" or not config.path:
            raise ValueError(f"source {config.name!r} is not a file source")
        self.config = config
        self.name = config.name
        self.batch_size = batch_size
        self.from_start = from_start  # read every file from its start (records read again)
        # what the last run of :meth:`batches` did, for the ingest report
        self.pending_lines = 0  # lines at the end of files left for a later run
        self.blank_lines = 0
        self.header_lines = 0  # CSV header lines read
        self.lines_read = 0  # physical lines taken: records, blank lines, CSV headers
        self.files_read = 0
        self.unreadable: list[tuple[str, str]] = []  # (path, why)

    def paths(self) -> list[str]:
        """Matching files, spelled as in the config (relative to the config's folder)."""
        pattern = os.path.expanduser(self.config.path or "")
        base = self.config.base_dir if not os.path.isabs(pattern) else None
        if glob.has_magic(pattern):
            found = glob.glob(pattern, root_dir=base, recursive=True)
        else:
            found = [pattern] if os.path.lexists(self.full(pattern)) else []
        return sorted(found)

    def full(self, path: str) -> str:
        """Where a path of :meth:`paths` is on disk."""
        if self.config.base_dir and not os.path.isabs(path):
            return os.path.join(self.config.base_dir, path)
        return path

    def total_bytes(self, checkpoints: dict[str, Checkpoint]) -> int:
        """About the bytes this ingest will read (compressed bytes for gzip): a progress total."""
        total = 0
        for p in self.paths():
            try:
                st = os.stat(self.full(p))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            pos = {} if self.from_start or p not in checkpoints else checkpoints[p].position
            if p.endswith(".gz"):
                total += 0 if pos.get("size") == st.st_size and pos.get("done") else st.st_size
            else:
                off = int(pos.get("offset", 0))
                total += st.st_size - off if off <= st.st_size else st.st_size
        return total

    def batches(self, checkpoints: dict[str, Checkpoint]) -> Iterator[RawBatch]:
        """Batches of every matching file from its checkpoint; then, when every file was read
        to its end, the source's checkpoint with its watermark (the newest file's mtime)."""
        self.pending_lines = self.blank_lines = self.header_lines = 0
        self.lines_read = self.files_read = 0
        self.unreadable = []
        all_done = True
        seen = newest = 0
        final: list[Checkpoint] = []
        sweep: dict[str, ReplaceMark] = {}
        for p in self.paths():
            fs = yield from self._file(p, checkpoints.get(p))
            if fs is None:  # a directory the glob matched
                continue
            seen += 1
            if fs is False:  # unreadable: the source is not known complete
                all_done = False
                continue
            assert isinstance(fs, FileState)
            self.files_read += 1
            newest = max(newest, fs.mtime_us)
            all_done = all_done and fs.done
            if fs.done and fs.replace is not None:
                # read again to its end under --replace: what it no longer gives is swept
                sweep[fs.path] = fs.replace
                pos = dict(fs.saved)
                pos.pop("replace", None)
                final.append(Checkpoint(self.name, fs.path, pos))
        if not seen and not self.unreadable:
            # nothing to read: the source is complete (and empty) as of now, so a hop that
            # emits nothing shows as stalled rather than as a lagging source
            final.append(Checkpoint(self.name, "", {"files": 0}, time.time_ns() // 1000))
        elif all_done:
            prev = checkpoints.get("")
            wm = max(newest, prev.watermark or 0) if prev else newest
            final.append(Checkpoint(self.name, "", {"files": seen}, wm))
        if final:
            yield RawBatch([], final, sweep=sweep)

    # -- one file ---------------------------------------------------------------------------

    def _skip(self, path: str, why: str) -> bool:
        logger.warning("source %s: skipped %s: %s", self.name, path, why)
        self.unreadable.append((path, why))
        return False

    def _file(
        self, path: str, cp: Checkpoint | None
    ) -> Generator[RawBatch, None, FileState | bool | None]:
        """Read one file. Returns its state, None for a directory the glob matched, or False
        when it could not be read (skipped with a warning)."""
        full = self.full(path)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(full, flags)  # O_NONBLOCK: never hangs on a FIFO
        except OSError as e:
            return self._skip(path, e.strerror or str(e))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if not stat.S_ISDIR(st.st_mode):
                return self._skip(path, "not a regular file")
            if glob.has_magic(self.config.path or ""):
                return None
            return self._skip(path, "is a directory")
        with os.fdopen(fd, "rb") as fh:
            try:
                return (yield from self._read(path, fh, st, cp.position if cp else {}))
            except OSError as e:  # also GzipDataError: the file changed between two passes
                return self._skip(path, e.strerror or str(e))

    def _resume(self, fs: FileState, fd: int, pos: dict[str, Any], scan: _GzipScan | None) -> bool:
        """Whether the file is the one the checkpoint describes (grown at most)."""
        off = int(pos.get("offset", 0))
        if off == 0:
            return True
        if pos.get("inode") != fs.inode:  # a new copy: read again, whatever it holds
            return False
        if scan is not None:  # gzip: the verified decompressed prefix must be the same
            if "vcrc" in pos:
                return scan.crc_at == int(pos["vcrc"]) and int(pos["vlen"]) <= scan.verified
            return off <= scan.verified  # a checkpoint from before fingerprints
        if off > fs.size:
            return False
        if "head" in pos:
            n = min(FINGERPRINT_BYTES, off)
            return _fp_at(fd, 0, n) == pos["head"] and _fp_at(fd, off - n, n) == pos["near"]
        return True  # a checkpoint from before fingerprints: inode and size as before

    def _read(
        self, path: str, fh: IO[bytes], st: os.stat_result, pos: dict[str, Any]
    ) -> Generator[RawBatch, None, FileState]:
        """Decide where to start (resume, or the start of a replaced file) and read on."""
        fd = fh.fileno()
        gz = path.endswith(".gz")
        fs = FileState(path, st.st_size, st.st_mtime_ns // 1000, st.st_ino, gz=gz)
        fs.replace = _mark(pos)
        unchanged = pos.get("size") == fs.size and pos.get("mtime") == fs.mtime_us
        fs.settled = unchanged or time.time() - st.st_mtime > SETTLE_SECONDS
        old_tail: dict[str, Any] | None = pos.get("tail")
        withdraw: list[tuple[str, str]] = []

        def take_position() -> None:
            fs.offset, fs.line = int(pos.get("offset", 0)), int(pos.get("line", 0))
            fs.filtered = int(pos.get("filtered", 0))
            fs.open_line = bool(pos.get("open"))

        scan: _GzipScan | None = None
        if gz:
            n = min(FINGERPRINT_BYTES, fs.size)
            fs.head, fs.near = _fp_at(fd, 0, n), _fp_at(fd, fs.size - n, n)
            fingerprint = (
                (pos.get("head"), pos.get("near")) if "head" in pos else (fs.head, fs.near)
            )
            same = (
                pos.get("size") == fs.size
                and pos.get("inode") == fs.inode
                and fingerprint == (fs.head, fs.near)
            )
            if same and pos.get("done") and not self.from_start:
                take_position()  # a compressed file is complete once read
                fs.vlen, fs.vcrc = int(pos.get("vlen", 0)), int(pos.get("vcrc", 0))
                fs.tail, fs.done, fs.saved = old_tail, True, dict(pos)
                return fs
            at = int(pos.get("vlen", 0)) if "vcrc" in pos and not self.from_start else 0
            scan = _scan_gzip(fh, at)
            fs.vlen, fs.vcrc = scan.verified, scan.vcrc
        if self.from_start:
            if old_tail and old_tail.get("digest"):
                withdraw.append((old_tail["ref"], old_tail["digest"]))
        elif self._resume(fs, fd, pos, scan):
            take_position()
            if old_tail and not gz and fs.size - fs.offset == old_tail.get("len"):
                n = min(int(old_tail["len"]), MAX_LINE_BYTES)
                if _fp_at(fd, fs.offset, n) == old_tail.get("fp"):  # the same settled end
                    fs.tail, fs.done, fs.saved = old_tail, True, dict(pos)
                    return fs
            if old_tail and old_tail.get("digest"):  # it changed: its quarantine row goes
                withdraw.append((old_tail["ref"], old_tail["digest"]))
        else:
            what = "replaced or rewritten" if gz else "truncated or replaced"
            logger.warning("%s: file was %s; reading it from the start", path, what)
        stream: Stream = _GzipStream(fh, scan.verified) if scan is not None else _PlainStream(fh)
        if self.config.file_format(path) == "csv":
            self._line_ends(fs, pos, stream)
        out = _Out(self, fs, stream, -1 if gz else fd)
        out.withdraw = withdraw
        final = scan is None or (scan.error is None and not scan.truncated)
        if self.config.file_format(path) == "csv":
            yield from self._read_csv(fs, stream, out, final)
        else:
            yield from self._read_jsonl(fs, stream, out, final)
        if not final and scan is not None:
            # read to the end of the verified part (a line cut there is left unread): the rest
            # is corrupt, or still coming
            if scan.error is not None or fs.settled:
                why = scan.error or "the file ends inside a gzip member (truncated)"
                reason = (
                    f"corrupt gzip file: {why}; the rest of the file from line {fs.line + 1} "
                    f"is not read ({scan.total - fs.offset:,} decompressed bytes after the last "
                    "verified member)"
                )
                ref = f"{path}:{fs.line + 1}"
                out.records.append(RawRecord(b"", ref, error=reason))
                fs.tail = {"ref": ref, "digest": quarantine_digest(b"")}
                fs.done = True
            else:
                self.pending_lines += 1
                fs.done = False
        yield out.batch()
        return fs

    def _line_ends(self, fs: FileState, pos: dict[str, Any], stream: Stream) -> None:
        """CR line endings for a CSV file: decided when it is read from its start and has
        settled (it holds a CR and no LF at all — a file still being written may yet show an
        LF), then kept from its checkpoint while no LF appears; an LF read from the start."""
        if fs.offset > 0:
            if pos.get("eol") != "cr":
                return
            lf, _ = _line_end_bytes(stream, fs.offset)
            if not lf:
                fs.cr = True
                return
            logger.warning("%s: LF line ends after CR ones; reading it from the start", fs.path)
            fs.offset = fs.line = fs.filtered = 0
            fs.open_line = False
        if fs.settled:
            lf, cr = _line_end_bytes(stream, 0)
            fs.cr = cr and not lf

    # -- JSONL -------------------------------------------------------------------------------

    def _read_jsonl(
        self, fs: FileState, stream: Stream, out: _Out, final: bool
    ) -> Generator[RawBatch, None, None]:
        """Read JSONL records from fs.offset. A line cut by the end of a stream that is not the
        file's end (gzip's verified part) is left unread, for the caller."""
        stream.seek(fs.offset)
        path, batch_size = fs.path, self.batch_size
        line, off = fs.line, fs.offset
        cont = fs.open_line  # the line taken last had no newline: what comes first ends it
        records = out.records
        blank = taken = 0
        fs.done = False
        left = False
        for run in line_runs(stream.read):
            if isinstance(run, list):  # ordinary lines: the hot loop
                if cont:
                    cont = False
                    if not run[0]:  # just the newline of that line
                        off += 1
                        run = run[1:]
                    else:  # the rest of that line
                        line -= 1
                taken += len(run)
                for data in run:
                    line += 1
                    off += len(data) + 1
                    body = data.strip()
                    if body:
                        records.append(RawRecord(body, f"{path}:{line}"))
                        if len(records) >= batch_size:
                            fs.line, fs.offset, fs.open_line = line, off, False
                            yield out.batch()
                            records = out.records
                    else:
                        blank += 1
                continue
            data, size, kind = run
            no = line if cont else line + 1
            if kind == _LONG:
                cont = False
                line, off, taken = no, off + size, taken + 1
                reason = _cr_note(data, "jsonl") + _too_long(size)
                records.append(RawRecord(data, f"{path}:{no}", error=reason))
                if len(records) >= batch_size:
                    fs.line, fs.offset, fs.open_line = line, off, False
                    yield out.batch()
                    records = out.records
                continue
            # the last line, without a newline
            body = data.strip() if kind == _OPEN else b""
            if not final:
                left = True
            elif kind == _OPEN and (not body or _is_json_object(body)):
                line, off, taken, cont = no, off + size, taken + 1, True
                if body:
                    records.append(RawRecord(body, f"{path}:{no}"))
                else:
                    blank += 1
            elif fs.settled:
                ref = f"{path}:{no}"
                raw = body or data
                reason = f"{UNTERMINATED}: "
                if kind == _LONG_OPEN:
                    reason += _too_long(size)
                else:
                    try:
                        orjson.loads(body)
                        reason += "not a JSON object"
                    except orjson.JSONDecodeError as e:
                        reason += f"malformed JSON: {e}"
                reason = _cr_note(raw, "jsonl") + reason
                records.append(RawRecord(raw, ref, error=reason))
                fs.tail = self._tail(ref, raw, size, stream, off)
                taken += 1
            else:
                self.pending_lines += 1
                fs.line, fs.offset, fs.open_line = line, off, cont
                self.blank_lines += blank
                self.lines_read += taken
                return
        fs.done = not left
        fs.line, fs.offset, fs.open_line = line, off, cont
        self.blank_lines += blank
        self.lines_read += taken

    def _tail(self, ref: str, raw: bytes, size: int, stream: Stream, off: int) -> dict[str, Any]:
        """The checkpoint's memory of a settled, quarantined, unconsumed end of a file."""
        tail: dict[str, Any] = {"ref": ref, "digest": quarantine_digest(raw), "len": size}
        if isinstance(stream, _PlainStream):
            tail["fp"] = _fp_at(stream.fh.fileno(), off, min(size, MAX_LINE_BYTES))
        return tail

    # -- CSV ---------------------------------------------------------------------------------

    def _read_csv(
        self, fs: FileState, stream: Stream, out: _Out, final: bool
    ) -> Generator[RawBatch, None, None]:
        """Read CSV records from fs.offset (the header from the file's start). A record cut by
        the end of a stream that is not the file's end (gzip) is left unread, for the caller."""
        path, delim = fs.path, self.config.delimiter
        fs.done = False
        stream.seek(0)
        sep = b"\r" if fs.cr else b"\n"
        fr = _CsvFramer(split_lines(stream.read, sep), delim, 0, 0)
        header: list[str] | None = None
        bad_header: str | None = None
        while True:  # blank lines, then the header record
            item = fr.next()
            if item is None:
                break
            kind, lines, val = item
            new = lines[0][1] >= fs.offset  # not taken by an earlier run
            if kind == F_BLANK:
                if new:
                    self.blank_lines += 1
                    self.lines_read += 1
                    fs.offset, fs.line = lines[0][1] + lines[0][3], lines[0][0]
                continue
            if kind in (F_TORN, F_OPEN):  # a header without its newline, and no rows yet
                fs.done = fs.settled and final  # settled: a file of nothing but a header
                if not fs.done:
                    self.pending_lines += len(lines)
                return
            if kind == F_OK:
                header = list(val)
                if header and header[0].startswith("\ufeff"):
                    header[0] = header[0][1:]
            else:
                bad_header = val
            end = lines[-1]
            if new:
                if bad_header is None:  # (a bad one is a quarantined record)
                    self.header_lines += len(lines)
                self.lines_read += len(lines)
                fs.offset, fs.line = end[1] + end[3], end[0]
                if bad_header is not None:
                    reason = f"unreadable CSV header: {bad_header}"
                    ref = f"{path}:{lines[0][0]}"
                    out.records.append(RawRecord(_raw(lines), ref, error=reason))
            break
        if header is None and bad_header is None:  # empty, or nothing but blank lines
            fs.done = True
            return
        if bad_header is not None:
            yield from self._csv_headerless(fs, stream, out, final, bad_header)
            return
        assert header is not None
        stream.seek(fs.offset)
        fr = _CsvFramer(split_lines(stream.read, sep), delim, fs.offset, fs.line)
        fr.width = ncol = len(header)
        records = out.records
        batch_size = self.batch_size
        blank = taken = 0
        left = False
        pending = False
        while True:
            item = fr.next()
            if item is None:
                break
            kind, lines, val = item
            first = lines[0]
            ref = f"{path}:{first[0]}"
            if kind in (F_TORN, F_OPEN):
                if not final:
                    left = True
                    break
                if not fs.settled:
                    self.pending_lines += self._count_rest(fr, lines)
                    pending = True
                    break
                if kind == F_OPEN and len(lines) > 1:
                    # a quote still open where a settled file ends: its first line goes to
                    # quarantine, the lines after it are framed again
                    fr.push_back(lines[1:])
                    lines = lines[:1]
                    kind, val = (
                        F_BAD,
                        "malformed CSV: quoted field not closed by the end of the file",
                    )
                else:  # an unterminated end: counted or quarantined, but not taken
                    last = lines[-1]
                    size = last[1] + last[3] - first[1]
                    taken += len(lines)
                    if kind == F_TORN and val is None:  # nothing but blanks
                        blank += 1
                        fs.tail = {"ref": ref, "digest": "", "len": size}
                        if isinstance(stream, _PlainStream):
                            fs.tail["fp"] = _fp_at(stream.fh.fileno(), first[1], size)
                    else:
                        raw = _raw(lines)
                        why = val if isinstance(val, str) else "possibly torn mid-field"
                        reason = f"{UNTERMINATED}: {why}"
                        records.append(RawRecord(raw, ref, error=reason))
                        fs.tail = self._tail(ref, raw, size, stream, first[1])
                    break
            last = lines[-1]
            fs.offset, fs.line = last[1] + last[3], last[0]
            taken += len(lines)
            if kind == F_OK:
                if len(val) != ncol:
                    reason = f"CSV row has {len(val)} fields, header has {ncol}"
                    records.append(RawRecord(_raw(lines), ref, error=reason))
                else:
                    data = dict(zip(header, val, strict=True))
                    records.append(RawRecord(_raw(lines), ref, data=data))
            elif kind == F_BLANK:
                blank += 1
            else:
                records.append(RawRecord(_raw(lines), ref, error=val))
            if len(records) >= batch_size:
                yield out.batch()
                records = out.records
        fs.done = not (left or pending)
        self.blank_lines += blank
        self.lines_read += taken

    def _count_rest(self, fr: _CsvFramer, lines: list[_Phys]) -> int:
        """The physical lines from these to the end of the data (left unread)."""
        n = len(lines)
        while fr.pull() is not None:
            n += 1
        return n

    def _csv_headerless(
        self, fs: FileState, stream: Stream, out: _Out, final: bool, why: str
    ) -> Generator[RawBatch, None, None]:
        """A CSV file whose header cannot be read: every line of it goes to quarantine."""
        stream.seek(fs.offset)
        path, line, off = fs.path, fs.line, fs.offset
        records = out.records
        reason = f"no usable CSV header (the header: {why})"
        for data, size, kind in split_lines(stream.read, b"\r" if fs.cr else b"\n"):
            no = line + 1
            if kind in (_OPEN, _LONG_OPEN):  # left unread when the stream is not the file's end
                if final and not fs.settled:
                    self.pending_lines += 1
                elif final:
                    ref = f"{path}:{no}"
                    records.append(RawRecord(data, ref, error=reason))
                    fs.tail = self._tail(ref, data, size, stream, off)
                    self.lines_read += 1
                    fs.done = True
                break
            line, off = no, off + size
            self.lines_read += 1
            if kind == _LINE and not data.strip():
                self.blank_lines += 1
            else:
                records.append(RawRecord(data.rstrip(b"\r"), f"{path}:{no}", error=reason))
            if len(records) >= self.batch_size:
                fs.line, fs.offset = line, off
                yield out.batch()
                records = out.records
        else:
            fs.done = True
        fs.line, fs.offset = line, off


def _line_end_bytes(stream: Stream, start: int) -> tuple[bool, bool]:
    """(an LF, a CR) in the stream from ``start``; stops at the first LF."""
    stream.seek(start)
    cr = False
    while chunk := stream.read(SNIFF_CHUNK):
        if b"\n" in chunk:
            return True, cr or b"\r" in chunk
        cr = cr or b"\r" in chunk
    return False, cr


def _cr_note(data: bytes, fmt: str) -> str:
    """The opening of a reason for a line holding CRs that are no line ends here (CR-only line
    endings, classic Mac): "CR line endings: …; ", or "" when it holds none."""
    n = data.rstrip(b"\r").count(b"\r")  # (a CRLF line's own CR is not one)
    if not n:
        return ""
    where = (
        "JSONL lines must end with LF or CRLF"
        if fmt == "jsonl"
        else "a CSV file is read with CR line endings only when it holds no LF at all"
    )
    return f"CR line endings: the line holds {n:,} CR without LF ({where}); "


def _too_long(size: int) -> str:
    return f"line longer than the limit ({size:,} bytes; the limit is {MAX_LINE_BYTES:,})"


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False
