"""Python calls (``mu.map``): functions sent to the worker once, calls run in forked children.

``protocol`` holds the frames both ends share, ``calls`` the worker session's side, ``runner``
the process that loads each function once and forks a child per call.
"""
