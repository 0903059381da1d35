"""Errors shown to the operator as one line: what went wrong and how to fix it."""


class SandboxError(RuntimeError):
    pass
