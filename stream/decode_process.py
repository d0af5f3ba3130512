"""Inference lines decoded in other processes and handed back as validated batch records.

Decoding JSON is about half of a replay's time. With spare cores, ``N`` child processes
(``python -m stream.decode_process``) each open the inference file, cut it into chunks of
``chunk`` lines and decode every ``N``-th chunk exactly as the replay would
(:func:`stream.lines.decode_lines`); each decoded chunk travels back as the worker's internal batch
records (:mod:`stream.records`), one per model. Only bytes cross the pipes: no pickle, and the
parent reads every record with the validating reader the worker uses on its internal topic. The
parent takes the chunks in order, one child after the other, and cuts the events into the same
batches an in-process replay makes, so the results do not depend on how many processes decoded.

A child takes a fifth of a second to start (importing numpy, orjson, msgspec). The parent does
not wait for it: it decodes the first chunks itself until every child says it is ready, then
tells them the chunk to start from (``S``): child ``i`` of ``N`` decodes the chunks ``S + i``,
``S + i + N``, ... So a small input is decoded in the parent alone, as fast as without children
(the children that never started are stopped), and a large one is not held up by their start.

Frames go on a pipe of their own (the child's stdout and stderr stay free): a header length
(uint32 LE), an orjson header (``{"v": 2, "sizes": [record lengths], "rejected": {reason: count},
"end": bool}``), then the records. A child's first frame says it is ready (``"ready": true``, no
records); it then reads the start chunk (uint64 LE) on its stdin (stdin closing instead: it is
not needed and ends), writes one frame per chunk it owns and a last frame with ``"end": true`` at
the first chunk it owns that the input does not reach; a child that stops before that frame is
an error.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # not a POSIX system: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

import orjson

from detectors.events import InferenceEvent
from stream.collector import fewer_collections
from stream.decoding import JsonDecoder
from stream.lines import INFERENCE, decode_lines, open_lines, read_chunk
from stream.records import RecordError, decode_batch, encode_inference_batch, source_position

FRAME_VERSION = 2
MAX_PROCESSES = 8
#: Inputs at least this large are decoded in other processes when the machine has a spare core.
AUTO_MIN_BYTES = 32 * 1024 * 1024
_LENGTH = struct.Struct("<I")
_START = struct.Struct("<Q")
#: Pipe buffer asked for (Linux; unprivileged processes may ask up to /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_BYTES = 1024 * 1024
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_POSITION = attrgetter("position")


class DecodeProcessError(RuntimeError):
    """A decoding process stopped early or sent something other than its frames."""


def usable_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return os.cpu_count() or 1


def auto_processes(path: str | Path, decoder: Any) -> int:
    """How many decoding processes ``auto`` starts: none for stdin, small files (under
    :data:`AUTO_MIN_BYTES`), decoders another process cannot rebuild, or a single core; otherwise
    one per spare core, at most :data:`MAX_PROCESSES`."""
    if str(path) == "-" or not isinstance(decoder, JsonDecoder) or decoder.settings() is None:
        return 0
    try:
        size = os.stat(path).st_size
    except OSError:
        return 0
    if size < AUTO_MIN_BYTES:
        return 0
    return max(0, min(MAX_PROCESSES, usable_cores() - 1))


# -- child -------------------------------------------------------------------------------------
def serve(path: str | Path, decoder: JsonDecoder, chunk: int, share: int, of: int, out: IO[bytes],
          start_from: IO[bytes] | None = None) -> None:
    """Decode the chunks ``S + share``, ``S + share + of``, ... of ``chunk`` lines of ``path`` onto
    ``out``, where ``S`` is read from ``start_from`` after the ready frame (0 without it)."""
    decode_many = decoder.decode_inference_many
    base = source_position(INFERENCE, 0, 0)
    rejected: Counter = Counter()
    with fewer_collections(), open_lines(path) as fh:
        _write_frame(out, [], rejected, end=False, ready=True)
        out.flush()
        start = 0
        if start_from is not None:
            raw = start_from.read(_START.size)
            if len(raw) < _START.size:
                return  # the replaying process decoded the whole input itself
            (start,) = _START.unpack(raw)
        lines = iter(fh)
        before = 0
        index = 0
        while True:
            lines_chunk, broken = read_chunk(lines, chunk)
            if index >= start and (index - start) % of == share and (lines_chunk or broken):
                items = decode_lines(decode_many, base, before, lines_chunk, rejected)
                _write_frame(out, _records(items), rejected, end=False)
                rejected.clear()
            before += len(lines_chunk)
            if broken or len(lines_chunk) < chunk:  # the end of the input (every child stops here)
                break
            index += 1
        if broken and share == 0:
            rejected["unreadable_input"] += 1
    _write_frame(out, [], rejected, end=True)
    out.flush()


def _records(items: list[InferenceEvent]) -> list[bytes]:
    """One model's events per record list (in their order), models in order of first appearance."""
    if not items:
        return []
    first = items[0].model
    if all(e.model == first for e in items):
        return encode_inference_batch(items)
    by_model: dict[str, list[InferenceEvent]] = {}
    for e in items:
        group = by_model.get(e.model)
        if group is None:
            by_model[e.model] = [e]
        else:
            group.append(e)
    return [r for events in by_model.values() for r in encode_inference_batch(events)]


def _write_frame(out: IO[bytes], records: list[bytes], rejected: Counter, end: bool, ready: bool = False) -> None:
    fields = {"v": FRAME_VERSION, "sizes": [len(r) for r in records], "rejected": dict(rejected), "end": end}
    head = orjson.dumps({**fields, "ready": True} if ready else fields)
    out.write(b"".join([_LENGTH.pack(len(head)), head, *records]))


# -- parent ------------------------------------------------------------------------------------
class _Child:
    """One decoding process and the read end of its frame pipe."""

    def __init__(self, path: str | Path, settings: dict[str, Any], chunk: int, share: int, of: int) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        read_fd, write_fd = os.pipe()  # a pipe of its own: nothing the child prints can reach it
        try:  # room for a whole frame, so the child decodes the next chunk while this one is read
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):  # above /proc/sys/fs/pipe-max-size, or not Linux: the default
            pass
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.decode_process", "--chunk", str(chunk), "--share", str(share),
                 "--of", str(of), "--decoder", orjson.dumps(settings).decode(), "--out-fd", str(write_fd),
                 "--start-from-stdin", str(Path(path).resolve())],
                stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.stream = os.fdopen(read_fd, "rb")
        self.share = share
        self.ready = False

    def close(self) -> None:
        self._close_stdin()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stream.close()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:  # the child has gone: its frames tell
                pass

    def poll_ready(self) -> bool:
        """Whether the child has said it is ready; reads that frame when it is waiting (or fails
        when the child stopped before it)."""
        if not self.ready and select.select([self.stream], [], [], 0)[0]:
            self.take_ready()
        return self.ready

    def take_ready(self) -> None:
        """Wait for and read the frame saying the child has started."""
        self.frame(ready=True)
        self.ready = True

    def start(self, index: int) -> None:
        """Tell a ready child the chunk to start from."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_START.pack(index))
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self.failed("stopped before it was told where to start") from None
        self._close_stdin()

    def release(self) -> None:
        """The child is not needed: a ready one is told so and ends, one still starting is stopped."""
        if self.ready:
            self._close_stdin()
            if self.proc.wait() != 0:
                raise self.failed("exited with an error")
        else:
            self.close()

    def frame(self, ready: bool = False) -> tuple[list[bytes], dict[str, int], bool]:
        """The next frame: its records, its rejects by reason, whether it is the last (``ready``:
        the first frame, which must say the child is ready and carry nothing)."""
        head = self._read(_LENGTH.size)
        if head is None:
            raise self.failed("stopped before its last frame")
        (length,) = _LENGTH.unpack(head)
        body = self._read(length) if length <= _MAX_HEADER_BYTES else None
        try:
            header = orjson.loads(body) if body is not None else None
        except orjson.JSONDecodeError:
            header = None
        if (type(header) is not dict or header.get("v") != FRAME_VERSION or type(header.get("end")) is not bool
                or type(header.get("sizes")) is not list or type(header.get("rejected")) is not dict
                or not all(type(n) is int and n > 0 for n in header["sizes"])
                or not all(type(n) is int and n > 0 for n in header["rejected"].values())
                or (header.get("ready") is True) != ready
                or ready and (header["sizes"] or header["rejected"] or header["end"])):
            raise self.failed("sent a malformed frame header")
        records = []
        for size in header["sizes"]:
            raw = self._read(size)
            if raw is None:
                raise self.failed("stopped inside a frame")
            records.append(raw)
        return records, header["rejected"], header["end"]

    def _read(self, n: int) -> bytes | None:
        data = self.stream.read(n)
        return data if len(data) == n else None

    def failed(self, what: str) -> DecodeProcessError:
        self._close_stdin()  # a child waiting to be told where to start ends
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        state = f" (exit code {code})" if code is not None else ""
        return DecodeProcessError(f"inference decoding process {self.share} {what}{state}")


class DecodeProcesses:
    """``processes`` children decoding one inference file; :meth:`batches` yields its events.

    Until every child is ready this process decodes the chunks itself (``decode_here=False``:
    it waits for them instead). Use as a context manager: leaving it stops the children still running.
    """

    def __init__(self, path: str | Path, decoder: JsonDecoder, batch_size: int, rejected: Counter,
                 processes: int = 1, chunk: int | None = None, decode_here: bool = True) -> None:
        settings = decoder.settings()
        if settings is None:
            raise ValueError("this decoder cannot be rebuilt in another process (it has its own clock)")
        if not 1 <= processes <= MAX_PROCESSES:
            raise ValueError(f"decoding processes must be between 1 and {MAX_PROCESSES}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.rejected = rejected
        chunk = chunk or max(batch_size, 1024)
        self.chunk = chunk
        self.path = path
        self.decode_many = decoder.decode_inference_many
        self.decode_here = decode_here  # False: every chunk is left to the children (tests)
        self.decoded_here = 0           # chunks decoded in this process while the children started
        self.children: list[_Child] = []
        try:
            for share in range(processes):
                self.children.append(_Child(path, settings, chunk, share, processes))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DecodeProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the children that still run and release their pipes."""
        for child in self.children:
            child.close()

    def batches(self) -> Iterator[list[InferenceEvent]]:
        """The events in line order, in lists of ``batch_size`` (the last one shorter), as
        :func:`stream.lines.decoded_batches` cuts them; rejected lines counted into ``rejected``."""
        size = self.batch_size
        pending: list[InferenceEvent] = []
        for events in self._chunks():
            pending.extend(events)
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending

    def _chunks(self) -> Iterator[list[InferenceEvent]]:
        """Each chunk's events in line order: the first ones decoded here while the children start
        (unless ``decode_here`` is off), the rest from the children's frames, dealt round robin."""
        children = self.children
        start = 0
        if self.decode_here:
            base = source_position(INFERENCE, 0, 0)
            with open_lines(self.path) as fh:
                lines = iter(fh)
                while not all([child.poll_ready() for child in children]):  # a list: every child is polled
                    lines_chunk, broken = read_chunk(lines, self.chunk)
                    self.decoded_here += 1
                    yield decode_lines(self.decode_many, base, start * self.chunk, lines_chunk, self.rejected)
                    start += 1
                    if broken or len(lines_chunk) < self.chunk:  # the input ended before the children started
                        if broken:
                            self.rejected["unreadable_input"] += 1
                        for child in children:
                            child.release()
                        return
        for child in children:
            if not child.ready:
                child.take_ready()
            child.start(start)
        turn = 0
        while True:
            child = children[turn % len(children)]
            records, rejected, end = child.frame()
            self.rejected.update(rejected)
            if end:
                break
            events: list[InferenceEvent] = []
            for raw in records:
                try:
                    batch = decode_batch(raw)
                except RecordError as exc:
                    raise child.failed(f"sent an invalid record: {exc}") from None
                if batch.kind != "i":
                    raise child.failed(f"sent a record of kind {batch.kind!r}")
                events.extend(batch.items)
            if len(records) > 1:
                events.sort(key=_POSITION)  # the models' records back into line order
            yield events
            turn += 1
        for other in children:  # the input ended: every other child's next frame is its last
            if other is not child:
                records, rejected, end = other.frame()
                if not end or records:
                    raise other.failed("sent a chunk past the end of the input")
                self.rejected.update(rejected)
        for other in children:
            if other.proc.wait() != 0:
                raise other.failed("exited with an error after its last frame")


def main(argv: list[str] | None = None) -> int:
    """Child entry point: decode this process's share of one inference file."""
    # Ctrl-C reaches the whole process group: the replaying process stops its children itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    p = argparse.ArgumentParser(prog="python -m stream.decode_process", description=__doc__.splitlines()[0])
    p.add_argument("--chunk", type=int, required=True, help="lines per chunk")
    p.add_argument("--share", type=int, default=0, help="this process's index")
    p.add_argument("--of", type=int, default=1, help="decoding processes in all")
    p.add_argument("--decoder", required=True, help="the decoder's settings (JSON)")
    p.add_argument("--out-fd", type=int, default=None, help="write the frames to this file descriptor "
                                                              "(default: stdout)")
    p.add_argument("--start-from-stdin", action="store_true",
                   help="after the ready frame, read the first chunk's index (uint64 LE) from stdin")
    p.add_argument("path")
    args = p.parse_args(argv)
    if args.chunk < 1 or args.of < 1 or not 0 <= args.share < args.of:
        print("decode_process: needs --chunk >= 1 and 0 <= --share < --of", file=sys.stderr)
        return 2
    try:
        decoder = JsonDecoder.from_settings(orjson.loads(args.decoder))
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        print(f"decode_process: bad decoder settings: {exc}", file=sys.stderr)
        return 2
    try:
        out = sys.stdout.buffer if args.out_fd is None else os.fdopen(args.out_fd, "wb")
    except OSError as exc:
        print(f"decode_process: --out-fd: {exc}", file=sys.stderr)
        return 2
    try:
        with out:
            serve(args.path, decoder, args.chunk, args.share, args.of, out,
                  sys.stdin.buffer if args.start_from_stdin else None)
    except BrokenPipeError:  # the parent stopped reading (it ended the replay early)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # everything is written and flushed: skip the interpreter's teardown, the parent waits on it
