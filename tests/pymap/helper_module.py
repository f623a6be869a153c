"""A sibling module of funcs.py, imported only when a call runs: it ships all the same."""


def shout(text: str) -> str:
    return text.upper() + "!"
