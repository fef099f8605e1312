"""`benchmint results publish / pull`: the store as a Hugging Face dataset (shards + a card)."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import yaml
from test_report_records import sample_records

from benchmint.results.importers import read_summary_csv
from benchmint.results.store import ResultsStore

SAMPLE_CSV = Path(__file__).parent.parent / "src" / "benchmint" / "results" / "samples" / "summary.csv"


def _store(path: Path, tmp: Path) -> ResultsStore:
    store = ResultsStore(path)
    store.append_many(sample_records(tmp) + read_summary_csv(SAMPLE_CSV)[:5])
    return store


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert m, "the card starts with YAML front matter"
    return yaml.safe_load(m.group(1)), m.group(2)


def test_publish_to_folder_then_pull_into_an_empty_store_gives_the_same_runs(cli, tmp_path):
    src = _store(tmp_path / "src", tmp_path)
    code, out, err = cli("results", "publish", "--folder", str(tmp_path / "ds"), "--results", str(src.path))
    assert code == 0, err
    shards = sorted((tmp_path / "ds" / "data").glob("runs-*.parquet"))
    assert shards and "published 11 run(s)" in out
    code, out, err = cli("results", "pull", "--folder", str(tmp_path / "ds"), "--results", str(tmp_path / "dst"))
    assert code == 0, err
    assert "pulled 11 new run(s)" in out
    before = {r.id: r.to_dict() for r in src.records()}
    after = {r.id: r.to_dict() for r in ResultsStore(tmp_path / "dst").records()}
    assert after == before
    # pulling again stores nothing twice
    code, out, _ = cli("results", "pull", "--folder", str(tmp_path / "ds"), "--results", str(tmp_path / "dst"))
    assert code == 0 and "pulled 0 new run(s) (11 read, 11 already stored)" in out
    assert len(ResultsStore(tmp_path / "dst").records()) == 11


def test_card_has_front_matter_and_documents_every_column(tmp_path):
    from benchmint.results.publish import publish

    store = _store(tmp_path / "s", tmp_path)
    publish(store, "my-org/bench", tmp_path / "ds")
    front, body = _card(tmp_path / "ds")
    assert front["license"] == "apache-2.0"
    assert front["configs"][0]["data_files"][0]["path"] == "data/runs-*.parquet"
    columns = pq.read_schema(next((tmp_path / "ds" / "data").glob("*.parquet"))).names
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \| [^|]+ \| \d+ \| (.+) \|$", body, re.M)}
    assert set(columns) <= set(rows), f"undocumented: {sorted(set(columns) - set(rows))}"
    assert all(len(v) > 5 for v in rows.values())
    assert "99th percentile (seconds)" in rows["metrics__ttft_s__p99"] and "TTFT" in rows["metrics__ttft_s__p99"]
    assert "(per second)" in rows["metrics__throughput__output_tokens_per_s"]


def test_hub_publish_creates_a_dataset_repo_uploads_the_layout_and_writes_no_token(tmp_path, monkeypatch):
    from benchmint.results.publish import publish

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_123")
    store = _store(tmp_path / "s", tmp_path)
    seen: dict = {}

    def upload_folder(folder_path, **kw):
        files = {p.relative_to(folder_path).as_posix(): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}
        seen.update(files=files, kw=kw)

    api = mock.Mock()
    api.upload_folder.side_effect = upload_folder
    pub = publish(store, "my-org/bench", api=api)
    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.kwargs["repo_type"] == "dataset"
    assert seen["kw"]["repo_id"] == "my-org/bench" and seen["kw"]["repo_type"] == "dataset"
    assert "README.md" in seen["files"] and any(f.startswith("data/runs-") for f in seen["files"])
    assert not any(b"hf_not_a_real_token_123" in b for b in seen["files"].values())
    assert pub.runs == 11 and pub.where.endswith("datasets/my-org/bench")


def test_hub_pull_downloads_the_dataset_and_errors_are_one_line(cli, tmp_path):
    from benchmint.core.errors import UserError
    from benchmint.results.publish import publish, pull

    publish(_store(tmp_path / "s", tmp_path), folder=tmp_path / "ds")
    download = mock.Mock(return_value=str(tmp_path / "ds"))
    read, new = pull(ResultsStore(tmp_path / "dst"), "my-org/bench", download=download)
    assert (read, new) == (11, 11)
    assert download.call_args.kwargs["repo_type"] == "dataset"

    def offline(**kw):
        raise OSError("network is unreachable")

    try:
        pull(ResultsStore(tmp_path / "dst2"), "my-org/bench", download=offline)
    except UserError as e:
        assert "my-org/bench" in str(e) and "network is unreachable" in str(e)
    else:
        raise AssertionError("an unreachable hub must be a user error")

    code, _, err = cli("results", "publish", "--repo", "not-a-repo", "--results", str(tmp_path / "s"))
    assert code == 2 and "ORG/NAME" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("results", "pull", "--folder", str(tmp_path / "empty"), "--results", str(tmp_path / "d3"))
    assert code == 2 and "no Parquet shards" in err and len(err.strip().splitlines()) == 1


def test_publish_takes_credentials_out_of_a_store_written_before_redaction(cli, tmp_path, monkeypatch):
    from benchmint.core import redact

    key = "sk-published-0123456789"
    store = ResultsStore(tmp_path / "old")
    recs = sample_records(tmp_path)
    recs[0].config["command_line"] = ["benchmint", "llm", "bench", "--url", f"http://u:{key}@h/v1"]
    recs[0].config["note"] = f"run with {key}"
    store.append_many(recs)  # the key was not known when the store was written: it is in the parts
    monkeypatch.setattr(redact, "_registered", {key})  # as after `--api-key KEY` in this process
    code, out, err = cli("results", "publish", "--folder", str(tmp_path / "ds"), "--results", str(store.path))
    assert code == 0, err
    for f in (tmp_path / "ds").rglob("*"):
        if f.suffix == ".parquet":
            assert key not in str(pq.read_table(f).to_pylist())
        elif f.is_file():
            assert key not in f.read_text()
