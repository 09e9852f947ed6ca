"""The status line of a long run, read from the run's progress log: cases finished, time left,
and what each worker is on."""
from fixtures.live_progress import LiveProgress, duration


def test_the_status_line_follows_the_log_from_where_the_run_began(tmp_path):
    log = tmp_path / "progress.log"
    log.write_text("2026-12-07 10:00:00,000 gw0 mnv2bench.train: old-case epoch 9/9: loss 0.1\n")
    clock = [100.0]
    progress = LiveProgress(log, total=4, clock=lambda: clock[0])
    progress.read()
    assert progress.line() == "[mnv2bench] 0/4 cases finished, 0 min 00 s elapsed, estimating the time left"
    with open(log, "a") as out:
        out.write("2026-12-07 10:00:01,000 gw0 mnv2bench.cache: building tiny-mobilenet_v2-partial_ft\n"
                  "2026-12-07 10:00:02,000 gw1 mnv2bench.train: tiny-resnet50-teacher epoch 2/12: loss 1.2\n"
                  "2026-12-07 10:00:03,000 gw0 mnv2bench.train: tiny-mobilenet_v2-partial_ft epoch 1/")  # half a line
    clock[0] = 190.0
    progress.case_finished()
    progress.read()
    assert progress.line() == ("[mnv2bench] 1/4 cases finished, 1 min 30 s elapsed, about 4 min 30 s left | "
                               "gw0: tiny-mobilenet_v2-partial_ft; gw1: tiny-resnet50-teacher epoch 2/12")
    with open(log, "a") as out:
        out.write("3: loss 0.9\n")  # the rest of the line
    progress.read()
    assert "gw0: tiny-mobilenet_v2-partial_ft epoch 1/3" in progress.line()


def test_durations_read_in_minutes_and_hours():
    assert duration(59.9) == "0 min 59 s" and duration(3725) == "1 h 02 min"
