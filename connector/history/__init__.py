"""History (SPEC 8): snapshots of the records as they were, and what is computed from them.

`snapshots`, `pull`, `asof` and the CRM modules keep and fetch the history. `source` says which
columns of a snapshot history the analyses read and types them the reference way, one row at a
time in Python; `engine` does the same reading and aggregating on DuckDB for histories of
millions of rows. `calibrate`, `propose`, `movement` and `accuracy` turn the small aggregates
either path produces into answers, so the two paths can only disagree in the reading and
aggregating, which the tests compare exactly.
"""
