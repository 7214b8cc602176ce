"""results.csv is checked whole before a run trains: a broken body (an unterminated quote, a row wider than
the header) is refused with exit status 2, naming the file and the line, and left as it was."""
import os

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
