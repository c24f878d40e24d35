"""The file-system object store of local runs keeps ObjectStore's promises; RoutedStore sends each URI home."""

from __future__ import annotations

from pathlib import Path

from chitu_worker.filestore import FileStore, RoutedStore


def test_a_stored_file_exists_whole_and_a_folder_copies(tmp_path):
    source = tmp_path / "video.mp4"
    source.write_bytes(b"\x00mp4" * 1000)
    store, prefix = FileStore(), tmp_path / "out" / "cats-1234abcd" / "prompt-0000"
    assert not store.exists(str(prefix / "video.mp4"))
    store.upload_file(source, str(prefix / "video.mp4"))
    assert store.exists(str(prefix / "video.mp4"))
    assert (prefix / "video.mp4").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in prefix.iterdir()) == ["video.mp4"]  # no partial file left behind
    copied = tmp_path / "copy"
    assert store.download_prefix(str(tmp_path / "out"), copied) == 1
    assert (copied / "cats-1234abcd" / "prompt-0000" / "video.mp4").read_bytes() == source.read_bytes()
    assert store.download_prefix(str(tmp_path / "missing"), copied) == 0


class RecordingStore:
    """Stands for S3: remembers what it was asked (the real S3 store is tested against SeaweedFS)."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def exists(self, uri: str) -> bool:
        self.calls.append(("exists", uri))
        return True

    def upload_file(self, path: Path, uri: str) -> None:
        self.calls.append(("upload", uri))

    def download_prefix(self, uri: str, dest: Path) -> int:
        self.calls.append(("download", uri))
        return 3


def test_routed_store_connects_s3_only_for_s3_uris(tmp_path):
    connected: list[RecordingStore] = []

    def connect():
        connected.append(RecordingStore())
        return connected[-1]

    store = RoutedStore(connect)
    source = tmp_path / "metrics.json"
    source.write_text("{}")
    store.upload_file(source, str(tmp_path / "out" / "metrics.json"))
    assert store.exists(str(tmp_path / "out" / "metrics.json")) and connected == []
    assert store.download_prefix("s3://models/tiny", tmp_path / "model") == 3
    assert store.exists("s3://videos/runs/x/metrics.json")
    assert len(connected) == 1
    assert connected[0].calls == [("download", "s3://models/tiny"), ("exists", "s3://videos/runs/x/metrics.json")]
