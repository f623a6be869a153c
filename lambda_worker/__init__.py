"""The mu worker: a thin command server that the coordinator drives over mutual TLS.

Stdlib and boto3 only, so the package is the whole Lambda deployment besides the binaries.
"""
