"""qmail-send and qmail-todo: preprocessing, scheduling, retries and bounces."""
