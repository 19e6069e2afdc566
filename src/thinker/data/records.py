"""A JSONL file's records without holding the file in memory (docs/data.md, "Large files and hub datasets").

JsonlRecords indexes where each non-blank line starts (8 bytes a record) in one pass and parses a record only
when it is asked for, so a 2 GB training file costs its index, not its text. Records are json.loads of the
same lines the validate stage checked, exactly what reading the whole file gave, which a typed reader would
not: pyarrow's JSON reader (what `datasets` uses for JSON files) gives every object of a column the union of
all objects' keys, so a chat message without a "name" would gain "name": None, and chat templates render it.
Hub datasets do come through `datasets` (thinker.data.hub), written to a JSONL file first.

MappedRecords turns each record into a task's example as it is read. Both are read-only Sequences: a data
task's read() returns them and the training code indexes them (thinker.data.prepare).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

_UTF8_BOM = b"\xef\xbb\xbf"


class JsonlRecords(Sequence):
    """The records of a (validated) JSONL file, blank lines skipped, at most `limit` of them; each parsed on
    access (iteration reads the file once, in order)."""

    def __init__(self, path: str | Path, limit: int | None = None):
        self.path = Path(path)
        self._starts = array("q")
        with open(self.path, "rb") as fh:
            position = 0
            for line in fh:
                if not line.isspace():
                    # a BOM opens the first line only: the record starts after it
                    self._starts.append(position + (len(_UTF8_BOM) if position == 0 and line.startswith(_UTF8_BOM)
                                                    else 0))
                    if limit is not None and len(self._starts) >= limit:
                        break
                position += len(line)
        self._fh: Any = None

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115  (kept open for the next access; closed by close())
        self._fh.seek(self._starts[index])
        return json.loads(self._fh.readline())

    def __iter__(self) -> Iterator[Any]:
        with open(self.path, "rb") as fh:
            for start in self._starts:
                if fh.tell() != start:
                    fh.seek(start)
                yield json.loads(fh.readline())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:  # a loader worker process opens its own handle
        return {**self.__dict__, "_fh": None}


class MappedRecords(Sequence):
    """`records` with `make` applied to each one as it is read."""

    def __init__(self, records: Sequence[Any], make: Callable[[Any], Any]):
        self.records, self.make = records, make

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.make(r) for r in self.records[index]]
        return self.make(self.records[index])

    def __iter__(self) -> Iterator[Any]:
        return map(self.make, self.records)


class Picked(Sequence):
    """The items of `items` at `indices`, in that order (a split of a lazily read file)."""

    def __init__(self, items: Sequence[Any], indices: Sequence[int]):
        self.items, self.indices = items, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.items[i] for i in self.indices[index]]
        return self.items[self.indices[index]]

    def __iter__(self) -> Iterator[Any]:
        return (self.items[i] for i in self.indices)
