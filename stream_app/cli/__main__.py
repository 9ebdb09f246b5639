"""``python -m stream_app.cli``: the ``mirrorscope`` command."""

from stream_app.cli import main

main()
