"""``python -m former.data``: prepare data ahead of a lab and say what was loaded."""

from __future__ import annotations

import csv

from former.data.__main__ import main


def test_prepares_a_given_csv_and_reports_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["review", "sentiment"])
        writer.writerows([("great fun", "positive"), ("dull, boring", "negative")] * 5)
    assert main(["imdb", "--data", str(path), "--final"]) == 0
    out = capsys.readouterr().out
    assert "IMDB CSV" in out and "8 train / 2 test reviews" in out and "loaded in" in out
    assert list((tmp_path / "cache" / "former" / "encoded").glob("imdb-encoded-*.pt"))


def test_offline_without_data_reports_the_generated_fallbacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FORMER_DATA_DIR", raising=False)
    assert main(["all", "--no-download"]) == 0
    captured = capsys.readouterr()
    assert "imdb: generated reviews" in captured.out and "enwik8: " in captured.out
    assert "tiny Shakespeare: " in captured.out
    assert captured.err.count("downloading is switched off") == 3
