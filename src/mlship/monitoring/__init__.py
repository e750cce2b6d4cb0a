"""Watching the served model: the inference log's format and reader, drift statistics and their plot."""
