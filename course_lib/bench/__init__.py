"""Benchmarks that back the course's speed claims, one module per chapter, each printing a table.

    ./course bench NAME [options]      # = python -m course_lib.bench NAME [options]
    ./course bench NAME --help         # NAME's options

The tests check correctness; these check speed. Each module has ``main(argv)``; the table of
names is ``BENCHMARKS`` in ``__main__.py``.
"""
