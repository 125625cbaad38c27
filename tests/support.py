"""What the test files share: running the command line (in this process, or for real in a
new one), the bad-input contract, a shared trained checkpoint, and switching microgpt.FAST
for a block of code.

Speed: starting a new interpreter costs about 0.2 s of CPU, and the whole suite must run in
at most 30 s on two cores, so the command line runs in this process (run_main) unless the
real process is the point of the test: signals, exit codes seen by the shell, a closed
stdout, memory peaks, resource limits (run_cli, Child in test_safety). The exception: a
class whose fixture is several whole training runs has them run in new processes on a
background thread (in_background), so that they use the second core while the tests
before them run."""
import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
import unittest
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import microgpt  # noqa: E402

MICROGPT_PATH = os.path.join(REPO, "microgpt.py")

# A new process compiles microgpt.py before it runs a line of it: about 0.1 s of CPU for
# its 6,900 lines, a third of its start-up, and the suite starts about 30 processes. Python
# keeps the compiled bytecode of an imported module, never of a script, so the tests start
# the command line the way `python -m microgpt` does (runpy runs the module's file as
# __main__, with sys.argv[0] its path): the same code, as the same program, from bytecode
# that the first process writes to a scratch cache (PYTHONPYCACHEPREFIX, inherited by every
# child) and the others read. `python microgpt.py` itself runs in .ci/run and in
# test_safety's memory measurements (TestMemoryIsBoundedByOneDocument); test_attacks'
# SIGINT-during-the-imports test runs the file as a script does, compiled from its text.
MICROGPT_COMMAND = [sys.executable, "-c", "import runpy, sys; sys.path.insert(0, %r); "
                    "runpy.run_module('microgpt', run_name='__main__', alter_sys=True)" % REPO]
_PYCACHE = tempfile.mkdtemp(prefix="microgpt-tests-pycache-")
atexit.register(shutil.rmtree, _PYCACHE, True)
os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)      # which would keep the first child from writing it
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
    """Run microgpt.py in a new process (MICROGPT_COMMAND), with the interpreter running the
    tests (CPython or PyPy). On the background thread (in_background) the environment is the
    one the tests started with, not os.environ as a test on the main thread may have patched
    it for a moment."""
    env = child_environment(env_update)
    return subprocess.run(MICROGPT_COMMAND + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def run_main(args, cwd, encoding="utf-8", stdin=""):
    """microgpt.main(args) in this process, as run_cli runs it in a new one: the same working
    directory, stdout and stderr that are not a terminal (in `encoding`, as PYTHONIOENCODING
    would set it), the text `stdin` piped in (nothing by default). Returns what run_cli returns (returncode, stdout,
    stderr); an exception main() lets through becomes its traceback on stderr and exit code
    1, as Python would print it."""
    args = [str(a) for a in args]
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding=encoding, newline="") for _ in range(2))
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
            try:
                code = microgpt.main(args)
            except SystemExit as e:                # --help, or argparse's own exit
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:                      # a bug: what the user would see
                traceback.print_exc(file=sys.stderr)
                code = 1
            finally:
                sys.stdin = old_stdin
    finally:
        os.chdir(here)

    def text(stream):    # as subprocess's text mode reads it: universal newlines
        stream.flush()
        return stream.buffer.getvalue().decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
    return subprocess.CompletedProcess(args, code, text(out), text(err))


_trained = {}                # options -> path of the checkpoint they trained, once per process


def trained_checkpoint(directory, options):
    """A copy in `directory` (as model.json) of the checkpoint that `microgpt.py --input
    names.txt options --save ...` writes, names.txt holding NAMES. The training runs once per
    test process, whichever tests ask for it; a test may change its copy freely."""
    key = tuple(str(a) for a in options)
    if key not in _trained:
        home = tempfile.TemporaryDirectory()
        atexit.register(home.cleanup)
        path = os.path.join(home.name, "model.json")
        names = write_text(home.name, "names.txt", "\n".join(NAMES) + "\n")
        result = run_main(["--input", names] + list(key) + ["--save", path], home.name)
        if result.returncode != 0:
            raise AssertionError(f"training the shared checkpoint failed:\n{result.stdout}\n{result.stderr}")
        _trained[key] = path
    copy = os.path.join(directory, "model.json")
    shutil.copyfile(_trained[key], copy)
    return copy


def snapshot(directory):
    """Every file (with its bytes; a file of more than 16 MB, such as the sparse 100 MB ones
    of the size limits, with its size and time of change instead) and directory under
    `directory`."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.join(root, name)] = "<dir>"
        for name in files:
            path = os.path.join(root, name)
            try:
                info = os.stat(path)
                if info.st_size > 16 * 2**20:
                    found[path] = (info.st_size, info.st_mtime_ns)
                    continue
                with open(path, "rb") as f:
                    found[path] = f.read()
            except OSError:
                found[path] = "<unreadable>"
    return found


# Fixtures in the background. The suite's CPU time is mostly this process running the
# command line in-process, one test after another, while the machine's second core waits.
# A class whose fixture is a few whole command lines (several training runs) can instead
# have them run in new processes on a thread of their own, started when its module is
# imported (unittest and pytest import every test module before running the first test),
# so they run beside the tests of the modules before it; its setUpClass then waits for the
# results. One thread for all of them: they share the second core.
# The background thread shares this process with the tests, so it must not read what a
# test patches for a moment on the main thread (os.environ, tempfile.tempdir): run_cli takes
# the environment as it was at the start, and a fixture's directory comes from
# scratch_directory(), in the temporary folder as it was at the start.
_background = ThreadPoolExecutor(max_workers=1)
_ENVIRONMENT_AT_START = dict(os.environ)
_TEMPORARY_FOLDER_AT_START = tempfile.gettempdir()


def child_environment(env_update=None):
    """The environment for a new microgpt process: this one's, with PYTHONIOENCODING=utf-8
    and env_update. On the background thread, the environment the tests started with."""
    base = os.environ if threading.current_thread() is threading.main_thread() else _ENVIRONMENT_AT_START
    env = dict(base, PYTHONIOENCODING="utf-8")
    env.update(env_update or {})
    return env


def set_class_fixture(cls, future):
    """For a setUpClass: wait for a fixture built in the background (a dict of names and
    values) and make each of its names an attribute of the test class."""
    for name, value in future.result().items():
        setattr(cls, name, value)


def scratch_directory():
    """A TemporaryDirectory for a fixture built in the background."""
    return tempfile.TemporaryDirectory(dir=_TEMPORARY_FOLDER_AT_START)


def in_background(build):
    """Start build() now, on the background thread; returns a Future whose .result() waits
    for build's return value (or raises its exception)."""
    return _background.submit(build)


def run_many(arg_lists, cwd, real=False):
    """run_main for several command lines, one after another; with real=True, run_cli for
    each, side by side (most of the time is then interpreter startup)."""
    if not real:
        return [run_main(args, cwd) for args in arg_lists]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda args: run_cli(args, cwd), arg_lists))


def assert_refused(test, directory, *cases, real=False):
    """The bad-input contract, for each command line in `cases`: exit code 2, exactly one
    non-empty stderr line starting with "microgpt: error:", no traceback anywhere, no
    training started; and afterwards `directory` is exactly as it was (no new, removed or
    changed files). The cases run in this process (run_main), one after another; with
    real=True each in a new process (run_cli), side by side: none of them may write
    anything, so they cannot disturb each other."""
    before = snapshot(directory)
    results = run_many(cases, directory, real)
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
