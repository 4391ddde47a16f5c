import hashlib
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from model_store.storage import STALE_TEMP_AGE_S, BlobNotFound, BlobTooLarge, FileSystemBlobStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 2**20


@pytest.fixture
def store(tmp_path):
    return FileSystemBlobStore(tmp_path / "blobs")


def temporaries(store) -> list[str]:
    return sorted(os.listdir(store.temp_dir)) if store.temp_dir.is_dir() else []


def test_a_blob_round_trips_under_its_sha256_in_a_sharded_read_only_file(store):
    data = os.urandom(100_000)
    digest = store.put_bytes(data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert store.read(digest) == data
    with store.open(digest) as blob:
        assert blob.read(10) == data[:10]
    assert store.exists(digest) and store.size(digest) == len(data)
    path = store.root / digest[:2] / digest[2:4] / digest
    assert store.path(digest) == path and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert list(store.digests()) == [digest]
    assert temporaries(store) == []


def test_put_stream_hashes_the_concatenated_chunks(store):
    chunks = [b"abc", bytearray(b"def"), memoryview(b"ghi"), b""]
    digest = store.put_stream(iter(chunks), max_bytes=9)
    assert digest == hashlib.sha256(b"abcdefghi").hexdigest()
    assert store.read(digest) == b"abcdefghi"


def test_storing_the_same_content_twice_keeps_the_first_file(store):
    digest = store.put_bytes(b"package ciphertext")
    inode = store.path(digest).stat().st_ino

    assert store.put_stream([b"package ", b"ciphertext"], max_bytes=100) == digest

    assert store.path(digest).stat().st_ino == inode
    assert list(store.digests()) == [digest]
    assert temporaries(store) == []


def test_concurrent_puts_of_one_content_store_it_once(store):
    data = os.urandom(MiB)
    digests = []
    threads = [threading.Thread(target=lambda: digests.append(store.put_bytes(data))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert digests == [hashlib.sha256(data).hexdigest()] * 6
    assert list(store.digests()) == digests[:1] and store.read(digests[0]) == data
    assert temporaries(store) == []


def test_an_upload_failing_midway_leaves_no_blob_and_no_temp_file(store):
    def failing_upload():
        yield b"first chunk"
        yield b"second chunk"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(failing_upload(), max_bytes=MiB)

    assert list(store.digests()) == []
    assert temporaries(store) == []
    assert not store.exists(hashlib.sha256(b"first chunksecond chunk").hexdigest())


def test_a_process_killed_midway_leaves_only_a_temp_file_that_garbage_collection_removes(store):
    # given a writer process that dies (no cleanup at all) in the middle of an upload
    writer = (
        "import os, sys\n"
        "from model_store.storage import FileSystemBlobStore\n"
        "def upload():\n"
        "    yield b'x' * 65536\n"
        "    yield b'y' * 65536\n"
        "    os._exit(9)\n"
        "FileSystemBlobStore(sys.argv[1]).put_stream(upload(), max_bytes=2**20)\n"
    )
    result = subprocess.run([sys.executable, "-c", writer, str(store.root)], cwd=REPO, capture_output=True)
    assert result.returncode == 9, result.stderr

    # then no blob exists, only its temp file
    assert list(store.digests()) == []
    (leftover,) = temporaries(store)
    assert (store.temp_dir / leftover).stat().st_size == 65536 * 2

    # and garbage collection removes it once it is stale, not before
    assert store.collect_garbage(set()) == []
    assert temporaries(store) == [leftover]
    stale = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(store.temp_dir / leftover, (stale, stale))
    store.collect_garbage(set())
    assert temporaries(store) == []


def test_an_oversized_stream_is_refused_after_max_bytes_without_reading_the_rest(store):
    chunk = bytes(MiB)
    consumed = 0

    def two_gigabytes():
        nonlocal consumed
        for _ in range(2048):
            consumed += 1
            yield chunk

    with pytest.raises(BlobTooLarge, match=f"over the limit of {8 * MiB} bytes"):
        store.put_stream(two_gigabytes(), max_bytes=8 * MiB)

    assert consumed == 9
    assert list(store.digests()) == [] and temporaries(store) == []


def test_a_stream_of_exactly_max_bytes_is_stored(store):
    assert store.size(store.put_stream([b"a" * 10, b"b" * 6], max_bytes=16)) == 16
    with pytest.raises(BlobTooLarge):
        store.put_stream([b"a" * 10, b"b" * 7], max_bytes=16)


def test_put_stream_refuses_chunks_that_are_not_bytes_and_a_bad_limit(store):
    with pytest.raises(ValueError, match="blob chunks must be bytes, got str"):
        store.put_stream(["text"], max_bytes=100)
    with pytest.raises(ValueError, match="max_bytes must be a non-negative integer"):
        store.put_stream([b"x"], max_bytes=-1)
    assert temporaries(store) == []


@pytest.mark.parametrize(
    "digest",
    [
        "../../../etc/passwd",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "ab/cd/" + "a" * 58,
        "/" + "a" * 63,
        "g" * 64,
        "a" * 64 + "\n",
        None,
        b"a" * 64,
    ],
)
def test_malformed_digests_are_refused_before_touching_the_file_system(store, digest):
    store.put_bytes(b"content")
    for operation in (store.open, store.read, store.exists, store.size, store.delete, store.path):
        with pytest.raises(ValueError, match="a blob digest is a sha256 in 64 lowercase hex digits"):
            operation(digest)
    with pytest.raises(ValueError, match="a blob digest is a sha256"):
        store.collect_garbage({digest})
    assert len(list(store.digests())) == 1


def test_missing_blobs_are_reported_as_not_found(store):
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound, match=f"no blob {digest}"):
        store.open(digest)
    with pytest.raises(BlobNotFound):
        store.size(digest)
    assert store.delete(digest) is False


def test_delete_removes_a_blob(store):
    digest = store.put_bytes(b"old model")
    assert store.delete(digest) is True
    assert not store.exists(digest) and list(store.digests()) == []


def test_garbage_collection_deletes_unreferenced_blobs_only(store):
    kept = store.put_bytes(b"deployed package")
    dropped = store.put_bytes(b"superseded package")
    also_dropped = store.put_bytes(b"failed upload")

    deleted = store.collect_garbage({kept})

    assert sorted(deleted) == sorted([dropped, also_dropped])
    assert list(store.digests()) == [kept] and store.read(kept) == b"deployed package"


def test_garbage_collection_spares_blobs_younger_than_the_grace_period(store):
    old = store.put_bytes(b"old upload")
    fresh = store.put_bytes(b"upload whose row is not committed yet")
    hour_ago = time.time() - 3600
    os.utime(store.path(old), (hour_ago, hour_ago))

    assert store.collect_garbage(set(), min_age_s=600) == [old]
    assert list(store.digests()) == [fresh]


def test_storing_existing_content_again_restarts_its_grace_period(store):
    digest = store.put_bytes(b"re-uploaded")
    hour_ago = time.time() - 3600
    os.utime(store.path(digest), (hour_ago, hour_ago))

    store.put_bytes(b"re-uploaded")

    assert store.collect_garbage(set(), min_age_s=600) == []
    assert store.exists(digest)


def test_stray_files_in_the_store_are_not_taken_for_blobs(store):
    digest = store.put_bytes(b"real")
    misplaced = hashlib.sha256(b"misplaced").hexdigest()
    (store.root / "ff" / "ff").mkdir(parents=True)
    (store.root / "ff" / "ff" / misplaced).write_bytes(b"misplaced")
    (store.root / digest[:2] / digest[2:4] / "notes.txt").write_text("x")

    assert list(store.digests()) == [digest]
    assert store.collect_garbage(set()) == [digest]
    assert (store.root / "ff" / "ff" / misplaced).exists()


def test_an_empty_or_missing_store_has_no_blobs(tmp_path):
    store = FileSystemBlobStore(tmp_path / "not-created-yet")
    assert list(store.digests()) == []
    assert store.collect_garbage(set()) == []
    assert store.put_bytes(b"") == hashlib.sha256(b"").hexdigest()
