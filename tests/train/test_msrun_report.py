"""msrun_report: what the worker logs of an msrun job say, on the console (issue 15 item 14)."""
import io

from msmm.train.msrun_report import main, report

WORKER_0 = """\
 iteration        1/       2 | lm loss: 1.0E+00
skipped data/train.jsonl:3: missing_image: data/gone.png
epoch 0: skipped 1 sample(s): missing_image=1; 1 skipped in all epochs so far
WARNING: iteration 2: non-finite loss; step skipped, parameters unchanged
"""
WORKER_1 = """\
some mindspore noise
Traceback (most recent call last):
  File "msmm/train/cli.py", line 10, in <module>
    main()
msmm.data.bad_input.BadInputError: data/train.jsonl:7: missing_image: data/gone2.png
"""


def _logs(tmp_path, **workers):
    for name, text in workers.items():
        (tmp_path / f"{name}.log").write_text(text)
    return str(tmp_path)


def test_warnings_and_the_failed_workers_error_reach_the_console(tmp_path):
    out = io.StringIO()
    assert report(_logs(tmp_path, worker_0=WORKER_0, worker_1=WORKER_1), status=1, show="iteration", out=out) == 1
    text = out.getvalue()
    assert " iteration        1/       2 | lm loss: 1.0E+00" in text
    assert "worker_0: skipped data/train.jsonl:3: missing_image: data/gone.png" in text
    assert "worker_0: epoch 0: skipped 1 sample(s)" in text and "worker_0: WARNING: iteration 2" in text
    assert "msrun: worker_1 stopped with:\nmsmm.data.bad_input.BadInputError: data/train.jsonl:7: missing_image" in text
    assert "some mindspore noise" not in text


def test_start_up_message_and_identical_errors_once(tmp_path, capsys):
    message = "msmm-train: data.json: dataset_param.basic_parameters.strcit: unknown key (did you mean 'strict'?)\n"
    assert main([_logs(tmp_path, worker_0=message, worker_1=message, worker_10=message), "--status", "2"]) == 2
    text = capsys.readouterr().out
    assert text.count("strcit") == 1 and "msrun: worker_0, worker_1, worker_10 stopped with:" in text


def test_no_error_printed_on_success_and_warnings_capped(tmp_path):
    out = io.StringIO()
    many = "".join(f"skipped d.jsonl:{i}: bad_record: x\n" for i in range(60))
    report(_logs(tmp_path, worker_0=many + WORKER_1), status=0, max_warnings=50, out=out)
    text = out.getvalue()
    assert text.count("bad_record") == 50 and "... and 10 more warnings" in text and "stopped with" not in text
