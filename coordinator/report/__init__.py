"""Seeing where a job's time and money went: the live progress display, the timing log's
contents, ``mu report`` (tables, the timeline picture, HTML) and the cost estimate."""
