"""What the test files share: running the real command line, the bad-input contract, and
switching microgpt.FAST for a block of code."""
import contextlib
import os
import subprocess
import sys
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import microgpt  # noqa: E402

MICROGPT_PATH = os.path.join(REPO, "microgpt.py")
NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "evelyn", "abigail",
         "harper", "emily", "ella", "liam", "noah", "logan", "mason", "elijah", "oliver", "daniel"]
WORKERS = max(2, min(4, os.cpu_count() or 1))     # command lines run side by side


@contextlib.contextmanager
def fast(flag):
    """Run a block with microgpt.FAST set to flag (False: Part I alone), and always put the
    old value back."""
    old = microgpt.FAST
    microgpt.FAST = flag
    try:
        yield
    finally:
        microgpt.FAST = old


def run_cli(args, cwd, env_update=None, timeout=120):
    """Run microgpt.py with the interpreter running the tests (CPython or PyPy)."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.update(env_update or {})
    return subprocess.run([sys.executable, MICROGPT_PATH] + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def snapshot(directory):
    """Every file (with its bytes) and directory under `directory`."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.join(root, name)] = "<dir>"
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    found[path] = f.read()
            except OSError:
                found[path] = "<unreadable>"
    return found


def run_many(arg_lists, cwd):
    """run_cli for several command lines side by side (most of the time is interpreter startup)."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda args: run_cli(args, cwd), arg_lists))


def assert_refused(test, directory, *cases):
    """The bad-input contract, for each command line in `cases`: exit code 2, exactly one
    non-empty stderr line starting with "microgpt: error:", no traceback anywhere, no
    training started; and afterwards `directory` is exactly as it was (no new, removed or
    changed files). The cases run side by side: none of them may write anything, so they
    cannot disturb each other."""
    before = snapshot(directory)
    results = run_many(cases, directory)
    for args, result in zip(cases, results):
        with test.subTest(args=args):
            context = f"\nargs: {args}\nexit: {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            test.assertEqual(result.returncode, 2, context)
            lines = result.stderr.splitlines()
            test.assertEqual(len(lines), 1, context)
            test.assertTrue(lines[0].startswith("microgpt: error:"), context)
            test.assertTrue(lines[0][len("microgpt: error:"):].strip(), "the error message is empty" + context)
            test.assertNotIn("Traceback", result.stdout + result.stderr, context)
            test.assertFalse([l for l in result.stdout.splitlines() if l.startswith("step ")],
                             "training started before the bad input was noticed" + context)
    test.assertEqual(snapshot(directory), before, f"files changed by one of {list(cases)}")
    return results


def assert_ok(test, result):
    context = f"\nexit: {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    test.assertEqual(result.returncode, 0, context)
    test.assertNotIn("Traceback", result.stdout + result.stderr, context)


def write_text(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


class TempDirTestCase(unittest.TestCase):
    """A fresh temporary directory holding names.txt (20 short names) for each test."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.tmp = self._tmp.name
        self.names = write_text(self.tmp, "names.txt", "\n".join(NAMES) + "\n")
