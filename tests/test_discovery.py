"""Exact identity: argv, the executable behind argv[0], #! interpreters, pidfile contents."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardian import proc
from guardian.discovery import Found, Matcher, StalePidfile, inspect, read_pidfile, scan
from guardian.proc import parse_cmdline

from conftest import Reaper, wait_for


def run(reaper: Reaper, argv: list[str], **popen: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
    reaper.track(proc.pid)
    reaper.children.append(proc)
    return proc


def is_target(pid: int, want: list[str]) -> bool:
    return isinstance(inspect(pid, Matcher(tuple(want))), Found)


def cmdline_ready(pid: int, argv0: str) -> bool:
    # Right after fork the child still shows our own command line, until it execs.
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(os.fsencode(argv0))
    except FileNotFoundError:
        return False


def test_exact_argv_matches_and_nothing_looser(tmp_path: Path, reaper: Reaper) -> None:
    proc = run(reaper, ["sleep", "301"], cwd=tmp_path)
    wait_for(lambda: cmdline_ready(proc.pid, "sleep"))
    sleep = os.path.realpath("/bin/sleep")
    assert is_target(proc.pid, [sleep, "301"])  # a bare argv[0] resolved by /proc/PID/exe
    assert not is_target(proc.pid, [sleep, "30"])  # never a substring or a prefix
    assert not is_target(proc.pid, [sleep, "301", "x"])
    assert not is_target(proc.pid, ["/bin/true", "301"])


def test_argv0_through_a_symlink_is_the_same_program(tmp_path: Path, reaper: Reaper) -> None:
    link = tmp_path / "snooze"
    link.symlink_to(os.path.realpath("/bin/sleep"))
    proc = run(reaper, [str(link), "302"])
    wait_for(lambda: cmdline_ready(proc.pid, str(link)))
    assert is_target(proc.pid, [os.path.realpath("/bin/sleep"), "302"])
    assert is_target(proc.pid, [str(link), "302"])


def test_script_shows_up_behind_its_interpreter(tmp_path: Path, reaper: Reaper) -> None:
    # What supervisord looks like: `python3 /usr/bin/supervisord -c ...`.
    script = tmp_path / "daemon"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    script.chmod(0o755)
    env_script = tmp_path / "env-daemon"
    env_script.write_text("#!/usr/bin/env python3\nimport time\ntime.sleep(300)\n")
    env_script.chmod(0o755)
    direct = run(reaper, [str(script), "-c", "conf"])
    via_env = run(reaper, [str(env_script), "-c", "conf"])
    impostor = run(reaper, [sys.executable, "-c", "import time; time.sleep(300)", str(script),
                            "-c", "conf"])  # fmt: skip
    # env may pass through a shim (pyenv's is a shell script) before python runs: poll.
    wait_for(lambda: is_target(direct.pid, [str(script), "-c", "conf"]))
    wait_for(lambda: is_target(via_env.pid, [str(env_script), "-c", "conf"]))
    wait_for(lambda: cmdline_ready(impostor.pid, sys.executable))
    assert not is_target(direct.pid, [str(script), "-c", "other"])
    # Something else with the script among its arguments is not the script.
    assert not is_target(impostor.pid, [str(script), "-c", "conf"])


def test_scan_finds_exact_matches_and_keeps_the_eldest(tmp_path: Path, reaper: Reaper) -> None:
    tag = str(tmp_path)
    code = "import os, time\nos.fork()\ntime.sleep(300)\n"  # parent and child: same argv
    parent = run(reaper, [sys.executable, "-c", code, tag], start_new_session=True)
    want = (sys.executable, "-c", code, tag)
    wait_for(lambda: cmdline_ready(parent.pid, sys.executable))
    children = wait_for(lambda: psutil.Process(parent.pid).children(), what="the fork")
    reaper.track(children[0].pid)
    assert children[0].cmdline() == list(want)
    assert [f.pid for f in scan(Matcher(want))] == [parent.pid]
    assert scan(Matcher((sys.executable, "-c", code, tag + "x"))) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"abc\n", "not a pid"),
        (b"+5", "not a pid"),
        (b"0x10", "not a pid"),
        (b"\xd9\xa3", "not a pid"),  # an Arabic-Indic digit: isdigit() but not a pid
        (b"4194305", "larger than any pid"),
    ],
)
def test_pidfile_contents(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "x.pid"
    path.write_bytes(content)
    with pytest.raises(StalePidfile, match=why):
        read_pidfile(path)


def test_pidfile_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "x.pid"
    os.mkfifo(fifo)
    with pytest.raises(StalePidfile, match="not a regular file"):
        read_pidfile(fifo)


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_any_pidfile_bytes_give_a_pid_or_a_reason(tmp_path_factory: pytest.TempPathFactory,
                                                  data: bytes) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("pid") / "x.pid"
    path.write_bytes(data)
    try:
        pid = read_pidfile(path).pid
    except StalePidfile as stale:
        assert stale.reason
    else:
        assert 1 < pid <= 4_194_304
        assert data.strip().decode() == str(int(data.strip()))


def unique(tmp_path: Path) -> str:
    """A number sleep(1) takes, that no other process's command line holds."""
    return f"300.{os.getpid()}{abs(hash(str(tmp_path))) % 10**6:06d}"


def test_the_scan_finds_every_form_of_the_command_line_and_no_impostor(
    tmp_path: Path, reaper: Reaper
) -> None:
    """What ``Matcher.could_be`` lets through to the full check, on real processes: each
    form ``program`` accepts is found by the scan exactly as ``inspect`` finds it."""
    sleep = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    script = tmp_path / "daemon"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    env_script = tmp_path / "env-daemon"
    env_script.write_text("#!/usr/bin/env python3\nimport time\ntime.sleep(300)\n")
    link = tmp_path / "snooze"
    link.symlink_to(sleep)
    for path in (script, env_script):
        path.chmod(0o755)
    tag = unique(tmp_path)
    long = "x" * 40_000  # more than one read of /proc/PID/cmdline
    forms: dict[str, tuple[list[str], tuple[str, ...], dict[str, object]]] = {
        "behind its #! interpreter": ([str(script), tag], (str(script), tag), {}),
        "behind env": ([str(env_script), tag], (str(env_script), tag), {}),
        "relative argv[0]": (["./snooze", tag + "1"], (str(link), tag + "1"), {"cwd": tmp_path}),
        "bare argv[0]": (["sleep", tag + "2"], (sleep, tag + "2"), {}),
        "argv[0] a symlink": ([str(link), tag + "3"], (sleep, tag + "3"), {}),
        "long command line": (
            [sys.executable, "-c", "import time; time.sleep(300)", long, tag],
            (sys.executable, "-c", "import time; time.sleep(300)", long, tag),
            {},
        ),
    }
    started = {name: run(reaper, argv, **popen) for name, (argv, _, popen) in forms.items()}
    # exec -a: the script's command line, another program.
    impostor = run(reaper, [str(script), tag], executable=sleep)
    wait_for(lambda: cmdline_ready(impostor.pid, str(script)))
    for name, (_, want, _) in forms.items():
        pid = started[name].pid
        matcher = Matcher(want, uid=os.geteuid())
        # env may pass through a shim before python runs: poll until inspect agrees.
        wait_for(lambda: isinstance(inspect(pid, matcher), Found), what=name)  # noqa: B023
        assert [f.pid for f in scan(matcher)] == [pid], name
    assert not is_target(impostor.pid, [str(script), tag])


def test_the_prefilter_only_rules_out_what_the_matcher_would(tmp_path: Path) -> None:
    """``could_be`` False means ``program`` is None, for every command line near the
    target's (``after``: what a process that wrote over its argv may leave after its
    last NUL, which is no item)."""
    script = tmp_path / "daemon"
    script.write_text(f"#!{sys.executable} -u\n")
    matcher = Matcher((str(script), "-c", "conf"))
    heads = [[], [sys.executable, "-u"], ["python3", "-u"], [sys.executable], ["-u"]]
    middles = [str(script), "daemon", "./daemon", "x", ""]
    tails = [["-c", "conf"], ["-c"], ["-c", "conf", "x"], [], ["conf"]]
    afters = [b"", b"junk", b"\0", b"-c\0conf\0"]
    matched = 0
    for head, middle, tail, after in itertools.product(heads, middles, tails, afters):
        raw = b"".join(os.fsencode(item) + b"\0" for item in [*head, middle, *tail]) + after
        if matcher.program(parse_cmdline(raw), os.getpid()) is not None:
            matched += 1
            assert matcher.could_be(raw), raw
    assert matched >= 10  # the program itself, and behind its interpreter, in several forms


def test_a_strangers_process_is_not_read_even_when_it_is_not_dumpable(reaper: Reaper) -> None:
    # A process that is not dumpable shows root as the owner of the files in /proc/PID:
    # the user it runs as is the folder's.
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    code = "import os, time; os.setuid(65534); time.sleep(300)"
    stranger = run(reaper, [sys.executable, "-c", code])
    wait_for(lambda: os.stat(f"/proc/{stranger.pid}").st_uid == 65534, what="the switch")
    assert os.stat(f"/proc/{stranger.pid}/cmdline").st_uid == 0
    assert stranger.pid not in dict(proc.cmdlines(frozenset({0})))
    argv = os.fsencode("\0".join([sys.executable, "-c", code, ""]))
    assert dict(proc.cmdlines(frozenset({65534})))[stranger.pid] == argv
    assert dict(proc.cmdlines())[stranger.pid] == argv


def test_a_root_target_with_another_effective_user_is_still_found(
    tmp_path: Path, reaper: Reaper
) -> None:
    """Its real user is root's (what identifies it), its /proc/PID folder shows the
    effective one: the scan's first look lets it through (it was once missed, and a
    second copy started)."""
    if os.geteuid() != 0:
        pytest.skip("switching the effective user needs root")
    argv = [sys.executable, "-c", "import os, time; os.seteuid(65534); time.sleep(300)",
            str(tmp_path)]  # fmt: skip
    target = run(reaper, argv)
    wait_for(lambda: os.stat(f"/proc/{target.pid}").st_uid == 65534, what="the seteuid")
    assert [f.pid for f in scan(Matcher(tuple(argv), uid=0))] == [target.pid]


def test_a_shebang_with_a_tab_is_read_as_linux_reads_it(tmp_path: Path, reaper: Reaper) -> None:
    """`#!/usr/bin/python3<TAB>-u`: Linux ends the interpreter at a tab too."""
    script = tmp_path / "tabbed"
    script.write_text(f"#!{sys.executable}\t-u\t\nimport time\ntime.sleep(300)\n")
    script.chmod(0o755)
    target = run(reaper, [str(script), "a", "b"])
    wait_for(lambda: cmdline_ready(target.pid, sys.executable), what="it to start")
    matcher = Matcher((str(script), "a", "b"))
    assert matcher.shebang() == (sys.executable, "-u")
    assert [f.pid for f in scan(matcher)] == [target.pid]
