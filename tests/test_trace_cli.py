"""`benchmint inspect`: human tables, --json for machines, --kineto, --rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PARAM = Path(__file__).parent / "data" / "param"


def test_inspect_json(cli):
    code, out, err = cli("inspect", str(PARAM / "1.1.0-chakra.0.0.4" / "resnet_2gpu_et.json.gz"), "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["schema_version"] == 1
    assert s["et_schema"] == "1.1.0-chakra.0.0.4" and s["et_version"] == "1.1.0" and s["chakra_version"] == "0.0.4"
    assert s["nodes"] == 14392 and s["top_level_ops"] == 3705
    assert sum(s["op_histogram"].values()) <= s["top_level_ops"] and len(s["op_histogram"]) == 15
    assert s["tensors"] > 0 and s["storage_bytes"] > 0 and s["storages"] > 0
    assert [t["tid"] for t in s["threads"]] == [1, 2]
    assert [i["number"] for i in s["iterations"]] == [4, 5, 6]
    assert s["devices"] == ["cpu", "cuda:1"]
    comm = s["communication"]
    assert comm["top_level_ops"] > 0 and "c10d::allreduce_" in comm["by_name"]
    assert any(c.get("collective_name") == "allreduce" for c in comm["collectives"])
    assert "kineto" not in s


def test_inspect_with_kineto_json(cli):
    code, out, err = cli("inspect", str(PARAM / "linear_et.json.gz"), "--kineto", str(PARAM / "linear_kineto.json.gz"),
                         "--json", "--top", "0")
    assert code == 0, err
    k = json.loads(out)["kineto"]
    assert k["matched_fraction"] == 1.0 and k["method"] == "sequence"
    assert "aten::mm" in k["time_by_op"] and k["time_by_op"]["aten::mm"]["total_s"] > 0


def test_inspect_human_tables_with_rank(cli):
    code, out, err = cli("inspect", str(PARAM / "dlrm_pytorch_et.tar.gz"), "--kineto",
                         str(PARAM / "dlrm_kineto.tar.gz"), "--rank", "2")
    assert code == 0, err
    for word in ("schema", "1.0.1", "top-level ops", "communication", "dlrm_eg_2.json", "worker2_", "matched",
                 "time by op type", "c10d::alltoall_base_"):
        assert word in out, word


def test_inspect_help_and_subprocess():
    out = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "inspect", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--kineto" in out.stdout and "--json" in out.stdout
    out = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "inspect",
                          str(PARAM / "pt2_et.json.tar.gz"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["iterations"][0]["number"] == 5


def test_inspect_bad_rank_is_a_user_error(cli):
    code, out, err = cli("inspect", str(PARAM / "dlrm_pytorch_et.tar.gz"), "--rank", "99")
    assert code == 2 and "rank 99" in err and "Traceback" not in err


def test_inspect_takes_a_capture_folder_as_replay_does(cli):
    # "is a directory; pass a trace file" before, for the folder `benchmint replay` takes
    code, out, err = cli("inspect", str(Path(__file__).parent / "data" / "tiny_capture"), "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["path"].endswith("et.json") and s["kineto"] is not None
