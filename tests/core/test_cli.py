from __future__ import annotations

import json

from click.testing import CliRunner

from synapse_ray.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_prints_result_json_and_progress():
    res = invoke("run", "tests.core.actions:AddAction", "--params", '{"a": 4, "b": 1}')
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"sum": 5}
    assert "100.0% SUCCEEDED" in res.stderr


def test_run_params_from_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"a": 10}')
    res = invoke("run", "tests.core.actions:AddAction", "--params", f"@{path}", "-q")
    assert res.exit_code == 0 and json.loads(res.stdout) == {"sum": 11}


def test_invalid_params_exit_2_with_field_message():
    res = invoke("run", "tests.core.actions:AddAction", "--params", '{"a": "x"}')
    assert res.exit_code == 2
    assert "a: Input should be a valid integer" in res.stderr
    assert res.stdout == ""


def test_params_not_json_or_not_object():
    res = invoke("run", "tests.core.actions:AddAction", "--params", "{oops")
    assert res.exit_code == 2 and "is not valid JSON" in res.stderr
    res = invoke("run", "tests.core.actions:AddAction", "--params", "[1]")
    assert res.exit_code == 2 and "must be a JSON object, got list" in res.stderr
    res = invoke("run", "tests.core.actions:AddAction", "--params", "@/no/such.json")
    assert res.exit_code == 2 and "params file not found" in res.stderr


def test_bad_target_exit_2():
    res = invoke("run", "tests.core.actions:Missing")
    assert res.exit_code == 2 and "has no attribute 'Missing'" in res.stderr


def test_failing_run_exits_1_with_one_paragraph():
    res = invoke("run", "tests.core.actions:ThreeStepAction", "--params", '{"fail_at": "train"}')
    assert res.exit_code == 1
    err_lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(err_lines) == 1
    assert "Step 'train' failed: boom in train" in err_lines[0]
    assert "(caused by ValueError: boom in train)" not in err_lines[0]  # not repeated
    assert res.stdout == ""


def test_output_file_gets_the_result(tmp_path):
    out = tmp_path / "result.json"
    res = invoke("run", "tests.core.actions:AddAction", "--params", '{"a": 1}', "-q", "-o", str(out))
    assert res.exit_code == 0
    assert json.loads(out.read_text()) == {"sum": 2} == json.loads(res.stdout)
