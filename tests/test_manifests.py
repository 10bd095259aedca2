"""What makes a partition stale: its objects against the marker's, a transform's upstream loads against the record."""
from __future__ import annotations

from luigi_pipelines.manifests import objects_change, recorded_upstream_loads, upstream_change


def obj(key: str, size: int = 10, etag: str = "e1", **more) -> dict:
    return {"key": key, "size": size, "etag": etag, **more}


def test_the_same_objects_are_no_change_whatever_else_the_marker_recorded():
    recorded = [obj("d/a.csv", rows=3, version_id="v1", copy_s=0.1), obj("d/b.csv", etag="e2")]
    assert objects_change(recorded, [obj("d/b.csv", etag="e2"), obj("d/a.csv")]) == ""
    assert objects_change([], []) == ""


def test_objects_added_removed_and_replaced_are_named():
    recorded = [obj("d/a.csv"), obj("d/b.csv"), obj("d/c.csv")]
    listed = [obj("d/a.csv", etag="e9"), obj("d/c.csv", size=11), obj("d/new.csv")]
    assert objects_change(recorded, listed) == \
        "1 added (d/new.csv), 1 removed (d/b.csv), 2 replaced (d/a.csv, d/c.csv)"
    assert objects_change([], [obj(f"k{i}") for i in range(5)]) == "5 added (k0, k1, k2, ...)"


def test_upstream_loads_changed_missing_or_never_recorded():
    sources = [{"upstream": "s.t", "rows_read": 3, "upstream_loads": {"s.t": "id-1"}}]
    recorded = recorded_upstream_loads(sources)
    assert recorded == {"s.t": "id-1"}
    assert upstream_change(recorded, {"s.t": "id-1"}) == ""
    assert upstream_change(recorded, {"s.t": "id-2"}) == "upstream was reloaded since (s.t)"
    assert upstream_change(recorded, {"s.t": None}, "upstream T 2019-02-01") == \
        "upstream T 2019-02-01 is not loaded any more (no marker: s.t)"
    assert upstream_change({"s.t/hour=00": None}, {"s.t/hour=00": None}) == ""  # markers older than load_id
    assert upstream_change(recorded_upstream_loads([{"upstream": "s.t", "rows_read": 3}]), {"s.t": "id-1"}) \
        .startswith("no record of the upstream loads")
