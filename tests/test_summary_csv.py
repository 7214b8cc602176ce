"""results.csv is checked whole before a run trains: a broken body (an unterminated quote, a row wider than
the header) is refused with exit status 2, naming the file and the line, and left as it was."""
import os
import shutil

import pytest

from utils.files import append_csv_row, check_csv_table

@pytest.mark.parametrize("body,expected", [
    ('experiment,note\n001,"an open quote\n', "not a readable CSV table after line 2 (unexpected end of data)"),
    ("experiment,note\n001,a,b\n", "line 2 has 3 fields, the header 2"),
])
def test_a_broken_body_is_refused_and_kept(tmp_path, body, expected):
    path = tmp_path / "results.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=expected.replace("(", "\\(").replace(")", "\\)")):
        check_csv_table(str(path))
    with pytest.raises(ValueError):
        append_csv_row(str(path), {"experiment": "002"})
    assert path.read_text() == body


def test_rows_written_before_a_column_was_added_and_quoted_fields_are_fine(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text('experiment,note\n001,"a ""quoted"", note\nover two lines"\n')
    append_csv_row(str(path), {"experiment": "002", "note": "x", "miou": 0.5})
    assert check_csv_table(str(path)) == ["experiment", "note", "miou"]
    assert check_csv_table(str(tmp_path / "missing.csv")) is None


def test_the_entry_script_refuses_a_broken_summary_before_training(run_entry, cityscapes_root, tmp_path, tiny_run):
    save_path = tmp_path / "exps"
    save_path.mkdir()
    summary = save_path / "results.csv"
    summary.write_text('experiment,note\n001,"an open quote\n')
    result = run_entry(tiny_run(cityscapes_root, save_path, "--epochs", "1", "--cache_dir", str(tmp_path / "cache")),
                       tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{summary}: not a readable CSV table after line 2" in result.stderr
    assert os.listdir(save_path) == ["results.csv"]
    assert summary.read_text() == 'experiment,note\n001,"an open quote\n'


def test_a_resume_refuses_a_broken_summary_beside_its_folder_before_training(run_entry, finished_run, tmp_path):
    save_path = shutil.copytree(finished_run, tmp_path / "exps")
    summary = save_path / "results.csv"
    summary.write_text(summary.read_text() + '002,"an open quote\n')
    before = {path: path.read_bytes() for path in save_path.rglob("*") if path.is_file()}
    result = run_entry(["--resume", save_path / "001", "--epochs", "3", "--workers", "0", "--notqdm"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{summary}: not a readable CSV table after line 4 (unexpected end of data); move or repair it (the " \
           "summary of finished runs), the resumed run adds its row there" in result.stderr
    assert {path: path.read_bytes() for path in save_path.rglob("*") if path.is_file()} == before
