"""Loaded by every Python process of a rehearsed pod (PYTHONPATH): records each MIRRORSCOPE_* and
AWS_* variable the code looks up, so the rehearsal can name a rendered variable no code reads.
A lookup is os.environ.get / `in` / [] from code; copying the whole environment is not one."""

import os
import sys
import sysconfig

_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "env-read.txt")
_seen: set = set()
_STDLIB = sysconfig.get_paths()["stdlib"]
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
    # Mapping.get/items() and the standard library's copies of the environment (os, platform,
    # urllib's proxy lookup) call [] for every key they walk: not a lookup by name.
    if not caller.startswith(("<frozen", _STDLIB)):
        _note(key)
    return _getitem(self, key)


def __contains__(self, key):
    _note(key)
    return _contains(self, key)


def get(self, key, default=None):
    _note(key)
    return _get(self, key, default)


_Env.__getitem__, _Env.__contains__, _Env.get = __getitem__, __contains__, get
