"""The domain, shared by the worker and the CLI; imports neither.

Rooms: ``rules`` (pure: states, outcomes, polling, rate maths, prices), ``store`` (the database
and every statement the engine runs), ``input`` (files into requests), ``reporting`` (status,
usage, report, exports), ``operations`` (cancel, retry, resume, delete, cost caps). At the top:
settings, errors, logs, and the two guards of outside text (``redaction``, ``untrusted``).
"""
