"""Data: the synthetic dataset, the MedMNIST loader, downloads against a local server, checksums."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from octbench.data import files, medmnist
from octbench.errors import DataError
from octbench.plugins import PluginHost


@pytest.fixture(scope="module")
def host():
    return PluginHost.load()


def test_synthetic_oct_is_deterministic_and_shaped_like_octmnist(host):
    a = host.create("dataset", "synthetic-oct", {"n_train": 200, "n_val": 40, "n_test": 40}).load(None)
    b = host.create("dataset", "synthetic-oct", {"n_train": 200, "n_val": 40, "n_test": 40}).load(None)
    assert a.md5 == b.md5
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert a.train_images.shape == (200, 28, 28, 1) and a.train_images.dtype == np.uint8
    assert a.num_classes == 4 and len(a.val_labels) == 40
    counts = np.bincount(a.train_labels, minlength=4)
    assert counts[3] > counts[0] > counts[1] > counts[2] > 0, "train follows OCTMNIST's imbalance"
    assert np.all(np.bincount(a.test_labels) == 10), "test is balanced"
    other = host.create("dataset", "synthetic-oct", {"n_train": 200, "n_val": 40, "n_test": 40, "seed": 1})
    assert other.load(None).md5 != a.md5


def test_synthetic_classes_differ_and_rgb_and_sizes_work(host):
    data = host.create("dataset", "synthetic-oct", {"n_train": 400, "size": 64, "channels": 3}).load(None)
    assert data.train_images.shape == (400, 64, 64, 3)
    means = [data.train_images[data.train_labels == c].mean(0) for c in range(4)]
    for c in range(3):  # each lesion class differs from normal on average
        assert np.abs(means[c] - means[3]).max() > 20


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory: Path):
    handler = lambda *a, **k: QuietHandler(*a, directory=str(directory), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fake_npz(classes: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(-1, 1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def served_breastmnist(tmp_path, monkeypatch):
    """breastmnist's INFO entry pointed at a file on a local HTTP server."""
    from octbench.data.medmnist import INFO

    payload = fake_npz()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "breastmnist.npz").write_bytes(payload)
    server = serve(tmp_path / "www")
    url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
    monkeypatch.setitem(
        INFO, "breastmnist", {**INFO["breastmnist"], "url": url, "MD5": hashlib.md5(payload).hexdigest()}
    )
    yield url, payload
    server.shutdown()
    server.server_close()


def test_download_verifies_and_renames_into_place(tmp_path, served_breastmnist):
    target = tmp_path / "data"
    path, md5 = medmnist.locate("breastmnist", 28, target, progress=False)
    assert path == target / "breastmnist.npz" and path.read_bytes() == served_breastmnist[1]
    assert [p.name for p in target.iterdir()] == ["breastmnist.npz"], "no temporary file left behind"
    splits = medmnist.read(path, "breastmnist", md5)
    assert splits.train_images.shape == (20, 28, 28, 1) and splits.class_names[0] == "malignant"


def test_download_with_wrong_md5_leaves_nothing(tmp_path, served_breastmnist, monkeypatch):
    from octbench.data.medmnist import INFO

    monkeypatch.setitem(INFO, "breastmnist", {**INFO["breastmnist"], "MD5": "0" * 32})
    target = tmp_path / "data"
    with pytest.raises(DataError, match=r"expected 0{32}.*Nothing was saved.*save it as"):
        medmnist.locate("breastmnist", 28, target, progress=False)
    assert not target.exists(), "the folder the download created is removed with it"
    target.mkdir()
    with pytest.raises(DataError):
        medmnist.locate("breastmnist", 28, target, progress=False)
    assert target.exists() and list(target.iterdir()) == [], "a folder that was there stays, empty"


def test_failed_download_leaves_nothing_and_says_where_to_put_the_file(tmp_path, served_breastmnist, monkeypatch):
    from octbench.data.medmnist import INFO

    monkeypatch.setitem(INFO, "breastmnist", {**INFO["breastmnist"], "url": served_breastmnist[0] + ".missing"})
    target = tmp_path / "data"
    with pytest.raises(DataError) as info:
        medmnist.locate("breastmnist", 28, target, progress=False)
    assert "failed" in str(info.value) and str(target / "breastmnist.npz") in str(info.value)
    assert not target.exists()


def test_no_download_when_asked_not_to(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        medmnist.locate("breastmnist", 28, tmp_path, fetch=False)


def test_local_file_with_wrong_md5_is_rejected(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not the real file")
    with pytest.raises(DataError, match=r"expected 750601b1f35ba3300ea97c75c52ff8f6.*Delete it"):
        medmnist.locate("breastmnist", 28, tmp_path)


def test_verified_files_are_not_hashed_again_until_they_change(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    md5 = hashlib.md5(b"abc").hexdigest()
    assert files.verified_md5(path, md5) == md5
    calls = []
    monkeypatch.setattr(files, "md5_of", lambda p: calls.append(p) or md5)
    assert files.verified_md5(path, md5) == md5
    assert calls == [], "an unchanged verified file was hashed again"
    path.write_bytes(b"abcd")
    monkeypatch.setattr(files, "md5_of", lambda p: calls.append(p) or hashlib.md5(p.read_bytes()).hexdigest())
    with pytest.raises(DataError):
        files.verified_md5(path, md5)
    assert calls == [path]


def test_unreadable_npz_is_a_data_error(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        medmnist.read(path, "breastmnist", "x")


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert medmnist.data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("OCTBENCH_DATA_DIR", str(tmp_path / "env"))
    assert medmnist.data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("OCTBENCH_DATA_DIR")
    assert medmnist.data_dir(None) == Path.home() / ".medmnist"


@pytest.mark.shared_data
def test_real_breastmnist_and_retinamnist_load(host, shared_data):
    breast = host.create("dataset", "breastmnist").load(str(shared_data))
    assert breast.md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert (len(breast.train_labels), len(breast.val_labels), len(breast.test_labels)) == (546, 78, 156)
    assert breast.train_images.shape[1:] == (28, 28, 1) and breast.num_classes == 2
    retina = host.create("dataset", "retinamnist").load(str(shared_data))
    assert retina.train_images.shape[1:] == (28, 28, 3) and retina.num_classes == 5
