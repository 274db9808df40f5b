import json

import numpy as np
import pytest

from transferjax import cli


def _hub_file(tmp_path, n=60, widths=(4, 9, 15, 6), drop_labels=False, short=None):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    arrays = {f"model{i}": rng.normal(size=(n, d)) + (i / 2) * np.eye(3, d)[y]
              for i, d in enumerate(widths)}
    if short:
        arrays[short] = arrays[short][:-1]
    if not drop_labels:
        arrays["labels"] = y
    path = tmp_path / "hub.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_rank_writes_table_json_png(tmp_path, capsys):
    path, arrays = _hub_file(tmp_path)
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({f"model{i}": 50 + 10 * i for i in range(4)}))
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(["rank", str(path), "--accuracies", str(acc), "--json", str(out_json),
                   "--plot", str(out_png), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "model3" in text and "weighted Kendall tau" in text
    data = json.loads(out_json.read_text())
    assert set(data["models"]) == {f"model{i}" for i in range(4)}
    assert data["models"]["model1"]["width"] == 9
    assert "weighted_tau" in data["evaluation"]["logme"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_directory_hub(tmp_path, capsys):
    _, arrays = _hub_file(tmp_path)
    folder = tmp_path / "hubdir"
    folder.mkdir()
    np.save(folder / "labels.npy", arrays.pop("labels"))
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    assert cli.main(["rank", str(folder), "--quiet"]) == 0
    assert "model2" in capsys.readouterr().out


def test_rank_example(capsys):
    assert cli.main(["rank", "--example", "--accuracies", "example", "--quiet"]) == 0
    assert "weighted Kendall tau" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kind, args, match",
    [
        ("nolabels", [], "no 'labels'"),
        ("short", [], "model 'model1' has 59 rows"),
        ("ok", ["--metric", "nope"], "unknown metric 'nope'"),
        ("missing", [], "no such file"),
    ],
)
def test_rank_bad_input_exit_2_nothing_written(tmp_path, capsys, kind, args, match):
    if kind == "missing":
        path = tmp_path / "absent.npz"
    else:
        path, _ = _hub_file(tmp_path, drop_labels=kind == "nolabels",
                            short="model1" if kind == "short" else None)
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(["rank", str(path), "--json", str(out_json), "--plot", str(out_png), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("transferjax: error:") and match in err[0]
    assert not out_json.exists() and not out_png.exists()


def test_score(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    path = tmp_path / "f.npz"
    np.savez(path, features=rng.normal(size=(40, 5)) + y[:, None], labels=y)
    assert cli.main(["score", str(path), "--metric", "logme"]) == 0
    assert np.isfinite(float(capsys.readouterr().out))
    np.savez(path, features=rng.normal(size=(40, 5)), labels=np.zeros(40, int))
    assert cli.main(["score", str(path)]) == 2
    assert "at least 2 classes" in capsys.readouterr().err


def test_rank_layerwise_hub(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = 60
    y = np.arange(n) % 3
    arrays = {"labels": y}
    for m, strength in (("a", 0.2), ("b", 1.5)):
        for layer, d in (("early", 4), ("late", 12)):
            s = strength * (2.0 if layer == "late" else 0.5)
            arrays[f"{m}/{layer}"] = rng.normal(size=(n, d)) + s * np.eye(3, d)[y]
    path = tmp_path / "layers.npz"
    np.savez(path, **arrays)
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"a": 60.0, "b": 80.0}))
    out = tmp_path / "r.json"
    assert cli.main(["rank", str(path), "--accuracies", str(acc), "--json", str(out),
                     "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["layers"] == "best"
    assert data["models"]["b"]["layer"]["logme"] == "late"
    assert data["models"]["b"]["ranks"]["logme"] == 1
    assert set(data["layer_scores"]["logme"]["a"]) == {"early", "late"}
    assert "95% CI" in capsys.readouterr().out
    assert cli.main(["rank", str(path), "--layers", "all", "--json", str(out), "--quiet"]) == 0
    assert set(json.loads(out.read_text())["models"]) == {"a/early", "a/late", "b/early", "b/late"}


def test_rank_prints_the_static_baseline(tmp_path, capsys):
    path, _ = _hub_file(tmp_path)
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({f"model{i}": 50 + 10 * i for i in range(4)}))
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"other": {f"model{i}": 90 - i for i in range(4)}}))
    assert cli.main(["rank", str(path), "--accuracies", str(acc), "--baseline-table", str(table),
                     "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "static baseline" in text and "P(beats the static baseline)" in text


def _corrupt(tmp_path, kind):
    """A hub path whose reading must fail with one line."""
    path, arrays = _hub_file(tmp_path)
    if kind == "corrupt_npz":
        path.write_bytes(path.read_bytes()[:100])
        return path
    folder = tmp_path / "dir"
    folder.mkdir()
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    if kind == "bad_npy":
        (folder / "model1.npy").write_bytes(b"\x93NUMPY garbage")
    elif kind == "bad_labels_txt":
        (folder / "labels.npy").unlink()
        (folder / "labels.txt").write_text("0\n1\ncat\n")
    return folder


@pytest.mark.parametrize(
    "kind, match",
    [("corrupt_npz", "cannot read the .npz hub"), ("bad_npy", "model1.npy: cannot read"),
     ("bad_labels_txt", "cannot read labels")],
)
def test_unreadable_files_exit_2_one_line(tmp_path, capsys, kind, match):
    path = _corrupt(tmp_path, kind)
    out = tmp_path / "r.json"
    assert cli.main(["rank", str(path), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()


def test_missing_output_folder_and_bad_option(tmp_path, capsys):
    path, _ = _hub_file(tmp_path)
    assert cli.main(["rank", str(path), "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["rank", str(path), "--layers", "sideways"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transferjax: error:")


def test_console_script_errors_are_one_line(tmp_path):
    """The installed command itself: exit 2, one line on stderr, no traceback, nothing written."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("transferjax")
    cmd = [exe] if exe else [sys.executable, "-m", "transferjax.cli"]
    path = _corrupt(tmp_path, "corrupt_npz")
    for args in (["rank", str(path), "--json", "out.json"], ["score", "absent.npz"],
                 ["rank", "--example", "--metric", "nope"]):
        r = subprocess.run(cmd + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (args, r.stderr)
        assert len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "out.json").exists()
