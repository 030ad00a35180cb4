"""The on-disk cache of encoded data: keyed by settings, atomic, bounded, self-repairing."""

from __future__ import annotations

import os

import torch

from former.data import locate


def test_cache_files_are_keyed_by_every_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = {"source": {"path": "/x", "size": 1, "mtime_ns": 2}, "vocab_size": 10, "seed": 0}
    first = locate.cache_file("imdb-encoded", key)
    assert first.parent == tmp_path / "former" / "encoded"
    assert first == locate.cache_file("imdb-encoded", dict(key))
    for change in ({"seed": 1}, {"vocab_size": 11}, {"source": {**key["source"], "size": 3}}):
        assert locate.cache_file("imdb-encoded", {**key, **change}) != first
    monkeypatch.setattr(locate, "CACHE_FORMAT_VERSION", 99)
    assert locate.cache_file("imdb-encoded", key) != first


def test_round_trip_and_unreadable_files_are_dropped(tmp_path, capsys):
    path = tmp_path / "imdb-encoded-abc.pt"
    locate.save_cached(path, {"ids": torch.arange(5), "itos": "a\nb"})
    loaded = locate.load_cached(path)
    assert torch.equal(loaded["ids"], torch.arange(5)) and loaded["itos"] == "a\nb"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file
    path.write_bytes(b"garbage")
    assert locate.load_cached(path) is None
    assert "unreadable" in capsys.readouterr().err and not path.exists()


def test_only_the_most_recently_used_entries_of_a_kind_are_kept(tmp_path):
    paths = [tmp_path / f"imdb-encoded-{i:02d}.pt" for i in range(locate.MAX_ENTRIES_PER_KIND + 2)]
    other_kind = tmp_path / "imdb-corpus-00.pt"
    locate.save_cached(other_kind, {"n": 0})
    for age, path in enumerate(paths):
        torch.save({"n": age, "format": locate.CACHE_FORMAT_VERSION}, path)
        os.utime(path, ns=(age * 10**9, age * 10**9))  # make the order unambiguous
    assert locate.load_cached(paths[0]) == {"n": 0, "format": locate.CACHE_FORMAT_VERSION}
    locate.save_cached(paths[-1], {"n": -1})  # saving prunes; loading paths[0] marked it used
    kept = {p.name for p in tmp_path.glob("imdb-encoded-*.pt")}
    assert len(kept) == locate.MAX_ENTRIES_PER_KIND
    assert paths[0].name in kept and paths[-1].name in kept
    assert paths[1].name not in kept and paths[2].name not in kept
    assert other_kind.exists()
