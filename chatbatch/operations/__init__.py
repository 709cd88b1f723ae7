"""What an operator (or the engine) does to a batch as a whole: cancel, retry, resume,
delete, and the cost caps."""
