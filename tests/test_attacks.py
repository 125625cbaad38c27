"""Nothing lost, round two: the attacks of issue 16, each through the real command line.

A hostile but realistic user tried to break microgpt; each class below is one family of what
broke, and each test one attack that failed before the fix:
1. what we write, we can read and replace (size, big integers, full disks, owners, modes);
2. every model that samples has finite scores (BOS included), checked on load and after training;
3. signals at any moment, any number of them: exit 128 + signal, no traceback;
4. the wreck alarm fires on wrecked models, not on noise;
5. no silent minute (a fake clock makes every phase look slow);
6. text as a person sees it (encodings, line ends, control characters, digits);
7. estimates that hold (memory, the --batch all announcement).
Randomised trials are few by default; MICROGPT_SLOW=1 runs many more.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import (MICROGPT_PATH, REPO, TempDirTestCase, assert_ok, assert_refused, run_cli,  # noqa: E402
                     snapshot, write_text)

import microgpt  # noqa: E402

import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]
SLOW = bool(os.environ.get("MICROGPT_SLOW"))
POSIX_SIGNALS = os.name != "nt" and hasattr(signal, "SIGHUP")


def trials(fast, slow):
    return slow if SLOW else fast


def patched_run(patch, args, cwd, env_update=None, timeout=120):
    """Run microgpt's main() in a fresh interpreter after executing `patch` (Python source
    with `microgpt` imported): a fake clock, a failing disk, a memory limit file."""
    code = (f"import sys; sys.path.insert(0, {REPO!r}); import microgpt\n{patch}\n"
            "sys.exit(microgpt.main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-c", code] + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def no_traceback(test, result_text, context=""):
    test.assertNotIn("Traceback", result_text, context)
    test.assertNotIn("Fatal Python error", result_text, context)


class Background:
    """microgpt.py (or a wrapper of it) running in the background, killed after 120 s at most."""

    def __init__(self, argv, cwd):
        env = dict(os.environ, PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding="utf-8")
        self.watchdog = threading.Timer(120, self.proc.kill)
        self.watchdog.start()
        self.stdout = ""

    def wait_for(self, prefix):
        while True:
            line = self.proc.stdout.readline()
            self.stdout += line
            if not line:
                raise AssertionError(f"no line starting with {prefix!r}; stdout so far:\n{self.stdout}")
            if line.lstrip("\n").startswith(prefix):
                return line

    def signal(self, number, delays):
        """Send `number` once after each delay (seconds) in turn."""
        for delay in delays:
            time.sleep(delay)
            self.proc.send_signal(number)

    def finish(self):
        try:
            out, err = self.proc.communicate(timeout=120)
            return self.proc.returncode, self.stdout + out, err
        finally:
            self.watchdog.cancel()


# --- 3. Signals at any moment ------------------------------------------------------------------

@unittest.skipUnless(POSIX_SIGNALS, "needs POSIX signals")
class TestSignalsAtAnyMoment(TempDirTestCase):
    """Any number of SIGINTs at any moment, from microgpt.py's first line to its exit: exit 130,
    no traceback, and a checkpoint that is either whole or not there."""

    def check(self, code, out, err, context):
        # 130 as the shell sees it: exit code 130, or (a signal that arrives while Python is
        # shutting down, after its handlers are gone) the end by SIGINT itself, which a
        # parent sees as -2 and a shell as 130 too.
        context = f"{context}\nexit {code}\nstderr:\n{err}"
        self.assertIn(code, (130, -signal.SIGINT), context)
        no_traceback(self, out + err, context)
        self.assertEqual([n for n in os.listdir(self.tmp) if n.startswith(".microgpt-")], [], context)

    def test_a_sigint_during_the_imports_exits_130_without_a_traceback(self):
        # The file is compiled first (as Python does before running any of it), then run as the
        # program from its first line; "ready" marks that moment.
        wrapper = ("import sys; path = sys.argv[1]; sys.argv = sys.argv[1:]\n"
                   "code = compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
                   "print('ready', flush=True)\n"
                   "exec(code, {'__name__': '__main__', '__file__': path})")
        rng = random.Random(9)
        for trial in range(trials(8, 60)):
            delay = rng.uniform(0, 0.08)
            child = Background([sys.executable, "-c", wrapper, MICROGPT_PATH, "--input", self.names, "--steps",
                                "2", "--num-samples", "1"] + TINY, self.tmp)
            child.wait_for("ready")
            child.signal(signal.SIGINT, [delay])
            self.check(*child.finish(), f"SIGINT {delay * 1000:.0f} ms after the first line")

    def test_two_sigints_during_sampling_exit_130_without_a_traceback(self):
        rng = random.Random(10)
        for trial in range(trials(6, 60)):
            delays = [rng.uniform(0, 0.03), rng.uniform(0, 0.02)]
            child = Background([sys.executable, MICROGPT_PATH, "--input", self.names, "--steps", "1",
                                "--num-samples", "100000000"] + TINY, self.tmp)
            child.wait_for("sample ")
            child.signal(signal.SIGINT, delays)
            self.check(*child.finish(), f"SIGINTs after {delays}")

    def test_three_sigints_during_training_exit_130_and_leave_a_whole_checkpoint_or_none(self):
        rng = random.Random(11)
        target = os.path.join(self.tmp, "model.json")
        for trial in range(trials(4, 30)):
            delays = [rng.uniform(0, 0.03), rng.uniform(0, 0.02), rng.uniform(0, 0.02)]
            child = Background([sys.executable, MICROGPT_PATH, "--input", self.names, "--steps", "100000",
                                "--num-samples", "0", "--save", target] + TINY, self.tmp)
            child.wait_for("step ")
            child.signal(signal.SIGINT, delays)
            self.check(*child.finish(), f"SIGINTs after {delays}")
            if os.path.exists(target):
                microgpt.load_checkpoint(target)
                os.remove(target)

    def test_a_sigint_after_the_work_is_done_exits_130_without_a_traceback(self):
        # Shutting down: the signal arrives after main() has put the old handlers back.
        rng = random.Random(12)
        for trial in range(trials(3, 20)):
            delay = rng.uniform(0, 0.03)
            child = Background([sys.executable, MICROGPT_PATH, "--input", self.names, "--steps", "1",
                                "--num-samples", "3"] + TINY, self.tmp)
            child.wait_for("sample  3")
            child.signal(signal.SIGINT, [delay, 0.001, 0.001])
            code, out, err = child.finish()
            self.assertIn(code, (0, 130, -signal.SIGINT), err)
            no_traceback(self, out + err)


if __name__ == "__main__":
    unittest.main()
