"""The one table from core refusals to HTTP statuses (uss_dav.statuses), shared by WebDAV and REST."""

from __future__ import annotations

import inspect

from hooks import ImageRejected
from uss_dav import storage
from uss_dav.keys import UnknownKey
from uss_dav.statuses import STATUS_OF, refusal


def test_every_storage_error_class_has_a_status() -> None:
    errors = {
        cls
        for _name, cls in inspect.getmembers(storage.errors, inspect.isclass)
        if issubclass(cls, storage.StorageError) and cls is not storage.StorageError
    }
    assert errors, "no storage errors found"
    listed = {cls for cls, _status in STATUS_OF}
    assert errors - listed == set()


def test_statuses_are_client_errors_or_507() -> None:
    for cls, status in STATUS_OF:
        assert 400 <= status < 500 or status == 507, cls


def test_refusal_maps_each_kind_to_one_status_with_its_reason() -> None:
    assert refusal(storage.AlreadyExists("taken")) == (409, "taken")
    assert refusal(storage.NotFound()) == (404, "NotFound")
    assert refusal(UnknownKey("k1")) == (404, "k1")
    assert refusal(ImageRejected(413, "too many pixels")) == (413, "too many pixels")
    assert refusal(RuntimeError("bug")) is None
