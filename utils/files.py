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


def atomic_write_bytes(path, payload):
    """Write `payload` to a temporary file beside `path`, then rename it onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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


def append_csv_row(path, row):
    """Add `row` to the CSV at `path`, rewriting it atomically; earlier rows are kept, new columns added.
    An exclusive lock on `path`.lock keeps runs that finish together from losing each other's rows."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = []
        if os.path.exists(path):
            with open(path, newline="") as stream:
                rows = list(csv.DictReader(stream))
        write_csv(path, rows + [row])


def save_torch(path, content):
    """Atomically save `content` with torch.save."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, buffer.getvalue())
