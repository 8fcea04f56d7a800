"""File source: JSONL or CSV files matched by a glob, plain or gzip, read resumably.

Each file's checkpoint holds the byte offset and line number reached, the file's identity
(inode, size, mtime) and how many of its records the source's ``where`` filtered. A file that
grew is read on from its offset; a file that was replaced or truncated is read again from the
start, and its filtered count starts again. An unterminated last line that does not parse yet is
left for the next run (it is probably still being written).
"""

from __future__ import annotations

import csv
import glob
import gzip
import logging
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

import orjson

from ordertrail.collectors.base import RawBatch, RawRecord
from ordertrail.errors import SourceError
from ordertrail.schemas.config import SourceConfig
from ordertrail.store.writer import Checkpoint

logger = logging.getLogger(__name__)

READ_CHUNK = 1 << 20


@dataclass(slots=True)
class FileState:
    path: str
    size: int
    mtime_us: int
    inode: int
    offset: int = 0
    line: int = 0
    filtered: int = 0  # records of this file the source's ``where`` filtered, before this run

    def position(self, done: bool) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "line": self.line,
            "size": self.size,
            "mtime": self.mtime_us,
            "inode": self.inode,
            "done": done,
            "filtered": self.filtered,
        }


class FileSource:
    """Reads the files of one ``kind = "file"`` source."""

    def __init__(self, config: SourceConfig, batch_size: int = 20_000):
        if config.kind != "file" or not config.path:
            raise ValueError(f"source {config.name!r} is not a file source")
        self.config = config
        self.name = config.name
        self.batch_size = batch_size
        self.pending_lines = 0  # unterminated last lines left for the next run
        self.files_read = 0

    def paths(self) -> list[str]:
        """Matching files, spelled as in the config (relative to the config's folder)."""
        pattern = os.path.expanduser(self.config.path or "")
        base = self.config.base_dir if not os.path.isabs(pattern) else None
        if glob.has_magic(pattern):
            found = glob.glob(pattern, root_dir=base, recursive=True)
        else:
            found = [pattern] if os.path.exists(self.full(pattern)) else []
        return sorted(found)

    def full(self, path: str) -> str:
        """Where a path of :meth:`paths` is on disk."""
        if self.config.base_dir and not os.path.isabs(path):
            return os.path.join(self.config.base_dir, path)
        return path

    def states(self, checkpoints: dict[str, Checkpoint]) -> list[FileState]:
        """Current files with the offset to resume from."""
        out = []
        for p in self.paths():
            try:
                st = os.stat(self.full(p))
            except OSError as e:
                raise SourceError(f"source {self.name}: cannot read {p}: {e.strerror}") from None
            if not os.path.isfile(self.full(p)):
                continue
            fs = FileState(p, st.st_size, st.st_mtime_ns // 1000, st.st_ino)
            cp = checkpoints.get(p)
            if cp:
                pos = cp.position
                if p.endswith(".gz"):  # offsets count decompressed bytes
                    same = pos.get("inode") == st.st_ino and pos.get("size") == st.st_size
                else:
                    same = pos.get("inode") == st.st_ino and st.st_size >= pos.get("offset", 0)
                if same:
                    fs.offset, fs.line = int(pos.get("offset", 0)), int(pos.get("line", 0))
                    fs.filtered = int(pos.get("filtered", 0))
                else:
                    logger.warning(
                        "%s: file was replaced or truncated; reading it from the start", p
                    )
            out.append(fs)
        return out

    def total_bytes(self, checkpoints: dict[str, Checkpoint]) -> int:
        return sum(
            max(0, s.size - s.offset)
            for s in self.states(checkpoints)
            if not s.path.endswith(".gz")
        )

    def batches(self, checkpoints: dict[str, Checkpoint]) -> Iterator[RawBatch]:
        states = self.states(checkpoints)
        all_done = True
        for fs in states:
            if (
                fs.path.endswith(".gz")
                and checkpoints.get(fs.path)
                and checkpoints[fs.path].position.get("done")
                and fs.offset > 0
            ):
                continue  # a compressed file is complete once read
            complete = yield from self._read_file(fs)
            all_done = all_done and complete
            self.files_read += 1
        if not states:
            # nothing to read: the source is complete (and empty) as of now, so a hop that
            # emits nothing shows as stalled rather than as a lagging source
            yield RawBatch([], [Checkpoint(self.name, "", {"files": 0}, time.time_ns() // 1000)])
        elif all_done:
            wm = max(s.mtime_us for s in states)
            prev = checkpoints.get("")
            if prev and prev.watermark and prev.watermark > wm:
                wm = prev.watermark
            yield RawBatch([], [Checkpoint(self.name, "", {"files": len(states)}, wm)])

    def _open(self, fs: FileState) -> IO[bytes]:
        try:
            if fs.path.endswith(".gz"):
                return cast(IO[bytes], gzip.open(self.full(fs.path), "rb"))
            return open(self.full(fs.path), "rb")
        except OSError as e:
            raise SourceError(f"source {self.name}: cannot open {fs.path}: {e.strerror}") from None

    def _read_file(self, fs: FileState) -> Generator[RawBatch, None, bool]:
        """Yield batches of one file; return True when the file was read to its end."""
        fmt = self.config.file_format(fs.path)
        with self._open(fs) as fh:
            if fmt == "csv":
                return (yield from self._read_csv(fs, fh))
            return (yield from self._read_jsonl(fs, fh))

    def _checkpoint(self, fs: FileState, done: bool) -> Checkpoint:
        return Checkpoint(self.name, fs.path, fs.position(done))

    def _read_jsonl(self, fs: FileState, fh: IO[bytes]) -> Generator[RawBatch, None, bool]:
        if fs.offset:
            fh.seek(fs.offset)
        records: list[RawRecord] = []
        start = fs.offset
        path = fs.path
        pending = False
        batch_size = self.batch_size
        try:
            tail = b""
            while True:
                chunk = fh.read(READ_CHUNK)  # big reads and one split: much cheaper than readline
                if not chunk:
                    break
                if tail:
                    chunk = tail + chunk
                parts = chunk.split(b"\n")
                tail = parts.pop()
                line, off = fs.line, fs.offset
                for raw in parts:
                    line += 1
                    off += len(raw) + 1
                    body = raw.strip()
                    if body:
                        records.append(RawRecord(body, f"{path}:{line}"))
                        if len(records) >= batch_size:
                            fs.line, fs.offset = line, off
                            yield RawBatch(
                                records, [self._checkpoint(fs, False)], fs.offset - start
                            )
                            records, start = [], fs.offset
                fs.line, fs.offset = line, off
            if tail:  # the last line has no newline: take it only if it is complete
                try:
                    orjson.loads(tail)
                except orjson.JSONDecodeError:
                    self.pending_lines += 1
                    pending = True
                else:
                    fs.line += 1
                    fs.offset += len(tail)
                    if tail.strip():
                        records.append(RawRecord(tail.strip(), f"{path}:{fs.line}"))
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            # a corrupt compressed file: keep what was read, quarantine the rest as one record
            records.append(
                RawRecord(b"", f"{path}:{fs.line + 1}", error=f"unreadable file data: {e}")
            )
            fs.offset = fs.size if not path.endswith(".gz") else fs.offset
            yield RawBatch(records, [self._checkpoint(fs, True)], fs.offset - start)
            return True
        done = not pending
        yield RawBatch(records, [self._checkpoint(fs, done)], fs.offset - start)
        return done

    def _read_csv(self, fs: FileState, fh: IO[bytes]) -> Generator[RawBatch, None, bool]:
        header_line = fh.readline()
        header_len = len(header_line)
        try:
            header = next(
                csv.reader([header_line.decode("utf-8-sig")], delimiter=self.config.delimiter)
            )
        except (StopIteration, UnicodeDecodeError, csv.Error):
            header = []
        if not header:
            if header_len:
                yield RawBatch(
                    [
                        RawRecord(
                            header_line, f"{fs.path}:1", error="CSV file has no readable header"
                        )
                    ],
                    [self._checkpoint(fs, True)],
                )
            return True
        if fs.offset < header_len:
            fs.offset, fs.line = header_len, 1
        fh.seek(fs.offset)
        consumed: list[bytes] = []

        def lines() -> Iterator[str]:
            for raw in fh:
                consumed.append(raw)
                yield raw.decode("utf-8", "replace")

        reader = csv.reader(lines(), delimiter=self.config.delimiter)
        records: list[RawRecord] = []
        start = fs.offset
        ncol = len(header)
        pending = False
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raw = b"".join(consumed)
                consumed.clear()
                first = fs.line + 1
                fs.line += raw.count(b"\n")
                fs.offset += len(raw)
                records.append(
                    RawRecord(
                        raw.rstrip(b"\r\n"), f"{fs.path}:{first}", error=f"malformed CSV: {e}"
                    )
                )
                continue
            raw = b"".join(consumed)
            consumed.clear()
            if not raw.endswith(b"\n") and len(row) != ncol:
                self.pending_lines += 1
                pending = True
                break
            first = fs.line + 1
            fs.line += max(1, raw.count(b"\n"))
            fs.offset += len(raw)
            body = raw.rstrip(b"\r\n")
            if not row or not body.strip():
                continue
            ref = f"{fs.path}:{first}"
            if len(row) != ncol:
                records.append(
                    RawRecord(body, ref, error=f"CSV row has {len(row)} fields, header has {ncol}")
                )
            else:
                records.append(RawRecord(body, ref, data=dict(zip(header, row, strict=True))))
            if len(records) >= self.batch_size:
                yield RawBatch(records, [self._checkpoint(fs, False)], fs.offset - start)
                records, start = [], fs.offset
        done = not pending
        yield RawBatch(records, [self._checkpoint(fs, done)], fs.offset - start)
        return done
