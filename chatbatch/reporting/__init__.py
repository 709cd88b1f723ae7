"""The read side: status objects, live views, usage and cost, the HTML report, one request
in full, and the JSONL/CSV exports."""
