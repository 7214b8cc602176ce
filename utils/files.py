"""Files that are never half-written: atomic writes (temporary file + rename), JSON, CSV, and rows
appended to a shared CSV under a lock."""
import csv
import fcntl
import io
import json
import math
import os
import tempfile

import numpy as np
import torch

from utils.errors import UserInputError


def current_umask():
    """The process's file-creation mask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMPORARY_PREFIX = ".tmp-"  # the names of atomic writes' temporary files start with it


def atomic_write(path, write_content):
    """Write the file `path` by `write_content(stream)` (a binary file object) into a temporary file beside
    `path`, then rename it onto `path`. The file gets the permissions of any new file (0666 minus the
    umask), not the temporary file's 0600; on any error or interruption the temporary file is removed
    and `path` keeps its previous content."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path))
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as stream:
            write_content(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_bytes(path, payload):
    """Write `payload` to `path` atomically (atomic_write)."""
    atomic_write(path, lambda stream: stream.write(payload))


def remove_leftover_temporary_files(folder, subfolders=()):
    """Remove the temporary files of atomic writes that a killed process left in `folder` and its
    `subfolders` (names starting with TEMPORARY_PREFIX); returns their paths. Only for a folder this
    process is the one writer of (utils.files.hold_writer_lock)."""
    removed = []
    for directory in (folder, *(os.path.join(folder, name) for name in subfolders)):
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.startswith(TEMPORARY_PREFIX) and os.path.isfile(path):
                os.unlink(path)
                removed.append(path)
    return removed


def to_jsonable(value):
    """`value` with tensors, numpy scalars and non-finite floats turned into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, content):
    """Atomically write `content` as indented JSON (NaN and infinities become null)."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(content), indent=2) + "\n").encode())


def write_csv(path, rows):
    """Atomically write `rows` (a list of dicts) as CSV, the columns being the union of the keys in order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_csv_header(path):
    """The column names of the CSV at `path` (None when the file is missing or empty); ValueError when
    its first line is not a CSV header (binary content, an empty column name)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path, "rb") as stream:
        first_line = stream.readline()
    try:
        columns = next(csv.reader([first_line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration) as error:
        raise ValueError(f"{path}: the first line is not a CSV header ({error})") from None
    if not columns or any(not name.strip() for name in columns) or "\x00" in first_line.decode("utf-8"):
        raise ValueError(f"{path}: the first line is not a CSV header (found {first_line[:80]!r})")
    return columns


def check_csv_table(path):
    """The column names of the CSV at `path` (None when the file is missing or empty) after reading the
    whole file: ValueError naming the line when its header is not one (see read_csv_header), a quoted
    field never ends, or a row has more fields than the header (rows with fewer are rows written before
    a column was added)."""
    columns = read_csv_header(path)
    if columns is None:
        return None
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream, strict=True)
            for row in reader:
                if len(row) > len(columns):
                    raise ValueError(f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                                     f"{len(columns)}")
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a readable CSV table after line {reader.line_num} ({error})") from None
    return columns


def csv_line(values):
    """One CSV line (with its newline) holding `values`."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


def append_csv_row(path, row):
    """Add `row` to the CSV at `path` without rewriting earlier rows: their bytes are kept as they are
    (hand edits included). Columns the header lacks are added to the header line only (earlier rows
    then read as empty there). An exclusive lock on `path`.lock keeps runs that finish together from
    losing each other's rows; the file is replaced atomically."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        columns = check_csv_table(path)
        if columns is None:
            write_csv(path, [row])
            return
        with open(path, "rb") as stream:
            stream.readline()
            body = stream.read()
        if body and not body.endswith(b"\n"):
            body += b"\n"
        columns = columns + [key for key in row if key not in columns]
        payload = csv_line(columns).encode() + body + csv_line([row.get(name, "") for name in columns]).encode()
        atomic_write_bytes(path, payload)


WRITER_LOCK = ".writer.lock"


def hold_writer_lock(folder):
    """An open file holding an exclusive fcntl.flock on {folder}/.writer.lock, the holder's process id
    written in it: the experiment folder's one writer. The lock ends with the file or the process (a
    crash or kill -9 included: nothing stays stuck). UserInputError naming the folder and the holder
    when another process holds it."""
    path = os.path.join(folder, WRITER_LOCK)
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise UserInputError(f"{folder} is being written by another run (process {holder}, holding {path}): "
                             "one run writes an experiment folder at a time; wait until it ends") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def save_torch(path, content):
    """Atomically save `content` with torch.save, streamed into the file (atomic_write): no second copy
    of a checkpoint is held in memory."""
    atomic_write(path, lambda stream: torch.save(content, stream))
