"""The hostile-input suite: each attack of issue 14 is caused, and its bound asserted.

A test here sends the hostile message, feeds the hostile spec or plants the
hostile file, and asserts what rabbitry does instead of failing: a located
error (exit 1, never 70), a refused or dead-lettered message, a bounded time
or memory, a secret that never appears.  Bounds are generous multiples of
what was measured (these machines are shared): they catch a hang or an
unbounded growth, not a slowdown.
"""
