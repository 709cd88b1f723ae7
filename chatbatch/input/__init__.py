"""Turning files into requests: JSONL request files, CSV and record files through templates,
request validation, estimates, and the all-or-nothing loader."""
