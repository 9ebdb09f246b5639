"""Loaded by every Python process of a rehearsed pod (PYTHONPATH): records each MIRRORSCOPE_* and
AWS_* variable the code looks up, so the rehearsal can name a rendered variable no code reads.
A lookup is os.environ.get / `in` / [] from code; copying the whole environment is not one."""

import os
import sys

_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "env-read.txt")
_seen: set = set()
_PREFIXES = ("MIRRORSCOPE_", "AWS_")


def _note(key):
    if isinstance(key, str) and key.startswith(_PREFIXES) and key not in _seen:
        _seen.add(key)
        try:
            with open(_OUT, "a") as f:
                f.write(key + "\n")
        except OSError:
            pass


_Env = type(os.environ)
_getitem, _contains, _get = _Env.__getitem__, _Env.__contains__, _Env.get


def __getitem__(self, key):
    caller = sys._getframe(1).f_code.co_filename
    if not caller.endswith(("_collections_abc.py", "<frozen os>", "os.py")):
        _note(key)
    return _getitem(self, key)


def __contains__(self, key):
    _note(key)
    return _contains(self, key)


def get(self, key, default=None):
    _note(key)
    return _get(self, key, default)


_Env.__getitem__, _Env.__contains__, _Env.get = __getitem__, __contains__, get
