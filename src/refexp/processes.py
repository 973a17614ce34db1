"""Child processes that end with their parent, even one killed by SIGKILL (issue 11: no stray processes).

- `spawn_tied(argv, **popen_kwargs)`: subprocess.Popen whose child gets SIGKILL when this process dies.
  On Linux the child calls prctl(PR_SET_PDEATHSIG, SIGKILL) before exec. That signal fires when the
  *thread* that forked the child exits, so children are forked by the main thread or by one daemon
  spawner thread that lives as long as the process. Other platforms get a process group per child,
  killed at exit and on SIGTERM (not on SIGKILL).
- `die_with_parent(parent_pid)`: the same tie for a worker of a ProcessPoolExecutor, as its
  `initializer` (the seed study's and the synthetic world's workers), so a killed stage leaves no
  worker training or rendering on its own.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import weakref
from concurrent.futures import Future
from queue import Queue

_PR_SET_PDEATHSIG = 1
LINUX = sys.platform.startswith("linux")
_prctl = None


def _pdeathsig_preexec():
    """A preexec_fn tying the child to this process: SIGKILL when the forking thread dies."""
    # resolved before fork: the child should only make the call
    prctl, parent, sig = _libc_prctl(), os.getpid(), int(signal.SIGKILL)

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(0)

    return preexec


# Non-Linux: JVMs still running, killed (their process group) at exit or on SIGTERM.
_live: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()
_cleanup_installed = False


def _kill_live(*_args) -> None:
    for proc in list(_live):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass


def _on_sigterm(signum, frame) -> None:
    _kill_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_fallback_cleanup() -> None:
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_kill_live)
    # only where nobody else handles SIGTERM, and signal() works only in the main thread
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _popen_tied(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen whose child dies with this process (see the module docstring)."""
    if LINUX:
        # preexec_fn despite threads: it only makes a pre-resolved libc call, takes no locks
        return subprocess.Popen(argv, preexec_fn=_pdeathsig_preexec(), **kwargs)  # noqa: PLW1509
    _install_fallback_cleanup()
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    _live.add(proc)
    return proc


class _Spawner:
    """One daemon thread that lives as long as the process and forks children on request."""

    def __init__(self) -> None:
        self._jobs: Queue = Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            fut, argv, kwargs = self._jobs.get()
            try:
                fut.set_result(_popen_tied(argv, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="meteor-jvm-spawner", daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._jobs.put((fut, argv, kwargs))
        return fut.result()


_spawner = _Spawner()


def _reset_spawner() -> None:
    global _spawner
    _spawner = _Spawner()  # a forked child has no spawner thread, and maybe a held lock


os.register_at_fork(after_in_child=_reset_spawner)


def spawn_tied(argv: list[str], **kwargs) -> subprocess.Popen:
    """Start a child tied to this process from a thread that lives as long as the process."""
    if threading.current_thread() is threading.main_thread():
        return _popen_tied(argv, **kwargs)
    return _spawner.popen(argv, **kwargs)


def _libc_prctl():
    global _prctl
    if _prctl is None:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _prctl.restype = ctypes.c_int
    return _prctl


def die_with_parent(parent_pid: int) -> None:
    """ProcessPoolExecutor initializer: SIGKILL this worker when `parent_pid` (the pool's owner) dies.
    Pass `initargs=(os.getpid(),)`. A no-op off Linux."""
    if not LINUX:
        return
    if _libc_prctl()(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before prctl: nobody would signal us
        os._exit(0)
