"""Reading ahead in a thread (importers/readahead.py) changes nothing of what the runner sees:
the same items in the same order, each activity encoded as the sender sends it, a reader's
error where it happened, and a reader that stops when the import does."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from importers.items import ExportError, Item, bad, skip
from importers.readahead import encode, read_ahead
from tests.factories import activity


def items(n: int) -> Iterator[Item]:
    for i in range(n):
        if i % 7 == 3:
            yield bad(f"f:{i}", "broken")
        elif i % 7 == 5:
            yield skip(f"f:{i}", "deleted user")
        else:
            a = activity(f"m-{i % 5}", "post", activity_id=f"a-{i}")
            yield Item(a.occurred_at, f"f:{i}", a)


def test_the_same_items_in_order_each_activity_encoded() -> None:
    got = list(read_ahead(items(1000), chunk=16, depth=2))
    assert [i.where for i, _ in got] == [i.where for i in items(1000)]
    for item, encoded in got:
        assert encoded == encode(item)
        assert (encoded is None) == (item.activity is None)


def test_items_already_sent_are_not_encoded() -> None:
    got = list(read_ahead(items(100), skip=40, chunk=8))
    assert all(e is None for _, e in got[:40])
    assert [e for _, e in got[40:]] == [encode(i) for i, _ in got[40:]]


def test_an_error_comes_after_the_items_read_before_it() -> None:
    def breaking() -> Iterator[Item]:
        yield from items(50)
        raise ExportError("Posts.xml:51: not well-formed XML")

    seen: list[str] = []
    with pytest.raises(ExportError, match=r"Posts\.xml:51"):
        for item, _ in read_ahead(breaking(), chunk=16):
            seen.append(item.where)
    assert seen == [i.where for i in items(50)]


def test_closing_stops_the_reader() -> None:
    def endless() -> Iterator[Item]:
        i = 0
        while True:
            i += 1
            yield skip(f"f:{i}", "x")

    stream = read_ahead(endless(), chunk=4, depth=2)
    next(stream)
    stream.close()
    assert not any(t.name == "import-reader" and t.is_alive() for t in threading.enumerate())
